"""Residents' phones sync too: batches and photo uploads without a device.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21

The phone form at ``/report`` queues reports offline and sends them with the
sync batch protocol, so a resident's resend is recognised exactly as a field
device's is. Residents have no device token, so a batch or upload may now be
stored without a device (``device_id`` NULL).
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE sync_batches ALTER COLUMN device_id DROP NOT NULL")
    op.execute("ALTER TABLE sync_uploads ALTER COLUMN device_id DROP NOT NULL")


def downgrade() -> None:
    op.execute("DELETE FROM sync_batches WHERE device_id IS NULL")
    op.execute("DELETE FROM sync_uploads WHERE device_id IS NULL")
    op.execute("ALTER TABLE sync_batches ALTER COLUMN device_id SET NOT NULL")
    op.execute("ALTER TABLE sync_uploads ALTER COLUMN device_id SET NOT NULL")
