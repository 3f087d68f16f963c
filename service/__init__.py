"""The civicmap web service: Flask app factory, models, SQL, HTTP resources and CLI."""
