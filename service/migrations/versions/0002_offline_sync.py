"""Offline sync: devices, stored batches, applied updates, resumable photo uploads, change sequence.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE devices (
            id           serial PRIMARY KEY,
            name         varchar(100) NOT NULL,
            user_id      integer NOT NULL REFERENCES users(id),
            area_id      integer NOT NULL REFERENCES areas(id),
            token_hash   varchar(64) NOT NULL UNIQUE,
            created_at   timestamptz NOT NULL DEFAULT now(),
            last_seen_at timestamptz,
            revoked_at   timestamptz
        );
        CREATE INDEX devices_user_id ON devices (user_id);

        -- Each pushed batch as first received; a replay answers with the stored response.
        CREATE TABLE sync_batches (
            batch_id     uuid PRIMARY KEY,
            device_id    integer NOT NULL REFERENCES devices(id),
            fingerprint  varchar(64) NOT NULL,
            sent_at      timestamptz NOT NULL,
            received_at  timestamptz NOT NULL,
            item_count   integer NOT NULL,
            response     jsonb NOT NULL
        );
        CREATE INDEX sync_batches_device ON sync_batches (device_id, received_at);

        -- Update items already applied: their client_id is the idempotency key.
        CREATE TABLE sync_applied_updates (
            client_id    uuid PRIMARY KEY,
            report_id    uuid NOT NULL REFERENCES reports(id),
            payload_hash varchar(64) NOT NULL,
            version      integer NOT NULL,
            device_id    integer NOT NULL REFERENCES devices(id),
            applied_at   timestamptz NOT NULL DEFAULT now()
        );

        ALTER TABLE reports
            ADD COLUMN device_id          integer REFERENCES devices(id),
            ADD COLUMN observed_at_device timestamptz,
            ADD COLUMN clock_offset_s     double precision;

        -- Photos uploaded in pieces, keyed by the sha256 of the bytes as the phone has them.
        CREATE TABLE sync_uploads (
            upload_sha256 varchar(64) PRIMARY KEY CONSTRAINT sync_uploads_sha_format CHECK (upload_sha256 ~ '^[0-9a-f]{64}$'),
            device_id     integer NOT NULL REFERENCES devices(id),
            total_bytes   integer NOT NULL CONSTRAINT sync_uploads_total CHECK (total_bytes > 0),
            content       bytea NOT NULL DEFAULT ''::bytea,
            stored_sha256 varchar(64) REFERENCES photos(sha256),
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT sync_uploads_not_past_total CHECK (octet_length(content) <= total_bytes)
        );

        -- Photos a synced report references that have not arrived yet.
        CREATE TABLE sync_photo_links (
            report_id     uuid NOT NULL REFERENCES reports(id),
            upload_sha256 varchar(64) NOT NULL,
            PRIMARY KEY (report_id, upload_sha256)
        );
        CREATE INDEX sync_photo_links_upload ON sync_photo_links (upload_sha256);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE sync_photo_links, sync_uploads, sync_applied_updates, sync_batches;
        ALTER TABLE reports DROP COLUMN device_id, DROP COLUMN observed_at_device, DROP COLUMN clock_offset_s;
        DROP TABLE devices;
        """
    )
