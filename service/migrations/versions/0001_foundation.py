"""Foundation schema: areas, categories, reports, events, photos, users, tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.execute(
        """
        CREATE TABLE areas (
            id          serial PRIMARY KEY,
            code        varchar(64) NOT NULL UNIQUE,
            level       varchar(16) NOT NULL CONSTRAINT areas_level_check CHECK (level IN ('city', 'district', 'commune')),
            parent_id   integer REFERENCES areas(id),
            name_en     varchar(200) NOT NULL,
            name_km     varchar(200) NOT NULL DEFAULT '',
            source_id   varchar(64),
            geom        geometry(MultiPolygon, 4326) NOT NULL CONSTRAINT areas_geom_valid CHECK (ST_IsValid(geom))
        );
        CREATE INDEX areas_geom_gist ON areas USING gist (geom);
        CREATE INDEX areas_parent_id ON areas (parent_id);

        CREATE TABLE categories (
            code        varchar(64) PRIMARY KEY CONSTRAINT categories_code_format CHECK (code ~ '^[a-z_]+(\\.[a-z_]+)?$'),
            parent_code varchar(64) REFERENCES categories(code),
            label_en    varchar(200) NOT NULL,
            label_km    varchar(200) NOT NULL,
            icon        varchar(64) NOT NULL DEFAULT '',
            sort_order  integer NOT NULL DEFAULT 0,
            active      boolean NOT NULL DEFAULT true
        );
        CREATE INDEX categories_parent_code ON categories (parent_code);

        CREATE TABLE users (
            id            serial PRIMARY KEY,
            username      varchar(64) NOT NULL UNIQUE,
            display_name  varchar(200) NOT NULL DEFAULT '',
            role          varchar(16) NOT NULL CONSTRAINT users_role_check
                          CHECK (role IN ('field_worker', 'moderator', 'planner', 'admin')),
            password_hash varchar(255),
            active        boolean NOT NULL DEFAULT true,
            created_at    timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE api_tokens (
            id           serial PRIMARY KEY,
            user_id      integer NOT NULL REFERENCES users(id),
            token_hash   varchar(64) NOT NULL UNIQUE,
            name         varchar(100) NOT NULL DEFAULT '',
            created_at   timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            revoked_at   timestamptz
        );
        CREATE INDEX api_tokens_user_id ON api_tokens (user_id);

        -- Public references are a scrambled sequence number (see service/references.py).
        CREATE SEQUENCE report_reference_seq;

        CREATE TABLE reports (
            id                  uuid PRIMARY KEY,
            reference           varchar(16) NOT NULL UNIQUE,
            category_code       varchar(64) NOT NULL REFERENCES categories(code),
            description         text NOT NULL DEFAULT ''
                                CONSTRAINT reports_description_length CHECK (char_length(description) <= 2000),
            landmark            text NOT NULL DEFAULT ''
                                CONSTRAINT reports_landmark_length CHECK (char_length(landmark) <= 200),
            location            geometry(Point, 4326) NOT NULL,
            accuracy_m          double precision CONSTRAINT reports_accuracy_check CHECK (accuracy_m IS NULL OR accuracy_m >= 0),
            city_id             integer NOT NULL REFERENCES areas(id),
            district_id         integer REFERENCES areas(id),
            commune_id          integer REFERENCES areas(id),
            status              varchar(16) NOT NULL DEFAULT 'new' CONSTRAINT reports_status_check
                                CHECK (status IN ('new', 'acknowledged', 'in_progress', 'resolved', 'rejected', 'duplicate')),
            duplicate_of        uuid REFERENCES reports(id),
            source              varchar(16) NOT NULL CONSTRAINT reports_source_check
                                CHECK (source IN ('web', 'api', 'field_sync', 'phone_form', 'seed', 'open311', 'openrosa')),
            observed_at         timestamptz NOT NULL,
            observed_at_flag    varchar(32),
            received_at         timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now(),
            acknowledged_at     timestamptz,
            closed_at           timestamptz,
            version             integer NOT NULL DEFAULT 1 CONSTRAINT reports_version_positive CHECK (version >= 1),
            payload_sha256      varchar(64) NOT NULL,
            contact_name        varchar(200),
            contact_phone       varchar(40),
            contact_email       varchar(254),
            contact_consent     boolean NOT NULL DEFAULT false,
            tracking_token_hash varchar(64) UNIQUE,
            created_by          integer REFERENCES users(id),
            hidden              boolean NOT NULL DEFAULT false,
            CONSTRAINT reports_duplicate_of_check CHECK ((status = 'duplicate') = (duplicate_of IS NOT NULL))
        );
        CREATE INDEX reports_location_gist ON reports USING gist (location);
        CREATE INDEX reports_received_keyset ON reports (received_at DESC, id DESC);
        CREATE INDEX reports_category_code ON reports (category_code);
        CREATE INDEX reports_status ON reports (status);
        CREATE INDEX reports_district_id ON reports (district_id);
        CREATE INDEX reports_commune_id ON reports (commune_id);
        CREATE INDEX reports_duplicate_of ON reports (duplicate_of) WHERE duplicate_of IS NOT NULL;

        CREATE TABLE report_events (
            id          bigserial PRIMARY KEY,
            report_id   uuid NOT NULL REFERENCES reports(id),
            at          timestamptz NOT NULL DEFAULT now(),
            actor_id    integer REFERENCES users(id),
            actor_role  varchar(16) NOT NULL,
            old_status  varchar(16),
            new_status  varchar(16),
            note        text NOT NULL DEFAULT ''
        );
        CREATE INDEX report_events_report_id ON report_events (report_id, id);

        -- The history is append-only: no UPDATE or DELETE of an event, ever.
        CREATE FUNCTION report_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'report_events is append-only';
        END $$;
        CREATE TRIGGER report_events_no_update BEFORE UPDATE OR DELETE ON report_events
            FOR EACH ROW EXECUTE FUNCTION report_events_append_only();

        CREATE TABLE photos (
            sha256      varchar(64) PRIMARY KEY CONSTRAINT photos_sha256_format CHECK (sha256 ~ '^[0-9a-f]{64}$'),
            content     bytea NOT NULL,
            mime        varchar(32) NOT NULL,
            width       integer NOT NULL,
            height      integer NOT NULL,
            byte_size   integer NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE report_photos (
            report_id    uuid NOT NULL REFERENCES reports(id),
            photo_sha256 varchar(64) NOT NULL REFERENCES photos(sha256),
            added_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (report_id, photo_sha256)
        );
        CREATE INDEX report_photos_photo ON report_photos (photo_sha256);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE report_photos, photos, report_events, reports, api_tokens, users, categories, areas;
        DROP FUNCTION report_events_append_only();
        DROP SEQUENCE report_reference_seq;
        """
    )
