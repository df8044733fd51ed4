-- mod_notary record store: cluster-wide roles.
-- Run by a role with CREATEROLE (sql/apply.sh runs it first). Idempotent.
--
--   notary_owner   owns the schema objects; the SECURITY DEFINER insert path
--                  runs as this role, never as a superuser.
--   notary_writer  what mod_notary connects as: may only add records.
--   notary_reader  compliance staff: may read the view notary_records.
--   notary_integrator  the log integrator: numbers final rows, writes the tree.
--   notary_receipt_reader  the receipt endpoint: entries, proofs, checkpoints.
--
-- All are NOLOGIN group roles. Make login users members, e.g.
--   CREATE ROLE notary LOGIN IN ROLE notary_writer;
--   CREATE ROLE alice  LOGIN PASSWORD '...' IN ROLE notary_reader;

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'notary_owner') THEN
        CREATE ROLE notary_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'notary_writer') THEN
        CREATE ROLE notary_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'notary_reader') THEN
        CREATE ROLE notary_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'notary_integrator') THEN
        CREATE ROLE notary_integrator NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'notary_receipt_reader') THEN
        CREATE ROLE notary_receipt_reader NOLOGIN;
    END IF;
END
$roles$;
