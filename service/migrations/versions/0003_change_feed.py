"""Change feed for devices: a commit-ordered sequence of what changed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

A change gets its feed number (``seq``) at COMMIT, by a deferred constraint
trigger that holds one advisory lock until the transaction ends. So numbers
become visible in order: whenever a reader sees ``seq = n``, every change
numbered below ``n`` is already committed (or rolled back). A cursor "after
n" can never skip a change that commits late, which numbering at INSERT
time (a plain sequence default) would allow.

Rows are written by the application where a report changes in a way a
device should hear about (new report, status, note, photo) and when
categories are loaded; bulk seeding writes none.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE SEQUENCE change_seq;
        CREATE TABLE changes (
            id            bigserial PRIMARY KEY,
            seq           bigint UNIQUE,
            kind          varchar(16) NOT NULL CONSTRAINT changes_kind_check CHECK (kind IN ('report', 'category')),
            report_id     uuid REFERENCES reports(id),
            category_code varchar(64) REFERENCES categories(code),
            city_id       integer,
            district_id   integer,
            commune_id    integer,
            at            timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT changes_subject CHECK ((kind = 'report') = (report_id IS NOT NULL)
                                              AND (kind = 'category') = (category_code IS NOT NULL))
        );
        CREATE INDEX changes_feed ON changes (seq) WHERE seq IS NOT NULL;

        CREATE FUNCTION changes_number_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- One writer at a time from here to the end of its COMMIT: numbers appear in order.
            PERFORM pg_advisory_xact_lock(7243001);
            UPDATE changes SET seq = nextval('change_seq') WHERE id = NEW.id AND seq IS NULL;
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER changes_numbered AFTER INSERT ON changes
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION changes_number_at_commit();
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE changes; DROP FUNCTION changes_number_at_commit(); DROP SEQUENCE change_seq;")
