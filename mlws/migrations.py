"""Schema migrations for the catalog, through ``sqlite_utils.Migrations("mlws")``.

Rules: a migration, once landed, is never edited; add ``0002_...`` instead and bump
``catalog.SCHEMA_VERSION``. Statements run one by one through ``db.execute`` (never
``executescript``, which would commit the migration's transaction half-way).
Times are REAL unix epochs (sortable, compact); JSON lives in TEXT columns.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Migrations

migrations = Migrations("mlws")

_INITIAL = [
    """CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT
    )""",
    """CREATE TABLE compute_targets (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        config TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    )""",
    """CREATE TABLE experiments (
        name TEXT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        description TEXT,
        archived INTEGER NOT NULL DEFAULT 0
    )""",
    # seq is the rowid: child tables key on this integer, not the ~30-byte text id, which keeps
    # the metrics table small at 10M rows and makes joins over 100k runs several times faster.
    """CREATE TABLE runs (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        experiment TEXT NOT NULL REFERENCES experiments(name),
        parent_id TEXT REFERENCES runs(id),
        root_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        child_count INTEGER NOT NULL DEFAULT 0,
        display_name TEXT,
        description TEXT,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        requested_status TEXT,
        created REAL NOT NULL,
        start_time REAL,
        end_time REAL,
        target TEXT,
        environment TEXT,
        snapshot TEXT,
        definition TEXT,
        submitter_user TEXT,
        submitter_host TEXT,
        host TEXT,
        supervisor_pid INTEGER,
        supervisor_start REAL,
        pid INTEGER,
        pid_start REAL,
        working_dir TEXT,
        error TEXT
    )""",
    "CREATE UNIQUE INDEX runs_experiment_number ON runs(experiment, number)",
    "CREATE INDEX runs_experiment_created ON runs(experiment, created)",
    "CREATE INDEX runs_parent ON runs(parent_id)",
    "CREATE INDEX runs_status ON runs(status)",
    "CREATE INDEX runs_created ON runs(created)",
    """CREATE TABLE run_tags (
        run_seq INTEGER NOT NULL REFERENCES runs(seq),
        key TEXT NOT NULL,
        value TEXT,
        PRIMARY KEY (run_seq, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX run_tags_key_value ON run_tags(key, value)",
    """CREATE TABLE run_properties (
        run_seq INTEGER NOT NULL REFERENCES runs(seq),
        key TEXT NOT NULL,
        value TEXT,
        PRIMARY KEY (run_seq, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX run_properties_key_value ON run_properties(key, value)",
    # value has no declared type (BLOB affinity), so ints, floats and strings keep their type;
    # anything else (bools, lists, dicts, None) is JSON in data.
    """CREATE TABLE metrics (
        run_seq INTEGER NOT NULL REFERENCES runs(seq),
        name TEXT NOT NULL,
        step INTEGER NOT NULL,
        kind TEXT NOT NULL,
        value,
        data TEXT,
        time REAL NOT NULL,
        PRIMARY KEY (run_seq, name, step)
    ) WITHOUT ROWID""",
    # One row per (run, metric name): the latest value and the count. Listing and sorting runs by
    # a metric reads this, never the (possibly 10M-row) metrics table.
    """CREATE TABLE metric_summary (
        run_seq INTEGER NOT NULL REFERENCES runs(seq),
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        last_value,
        count INTEGER NOT NULL,
        PRIMARY KEY (run_seq, name)
    ) WITHOUT ROWID""",
    "CREATE INDEX metric_summary_name_value ON metric_summary(name, last_value)",
    """CREATE TABLE run_files (
        run_seq INTEGER NOT NULL REFERENCES runs(seq),
        path TEXT NOT NULL,
        blob TEXT NOT NULL,
        size INTEGER NOT NULL,
        mode INTEGER NOT NULL DEFAULT 420,
        created REAL NOT NULL,
        PRIMARY KEY (run_seq, path)
    ) WITHOUT ROWID""",
    "CREATE INDEX run_files_blob ON run_files(blob)",
    """INSERT INTO compute_targets (name, type, config, created)
       VALUES ('local', 'local', '{}', strftime('%s','now'))""",
]


@migrations(name="0001_initial")
def m0001_initial(db: Any) -> None:
    for statement in _INITIAL:
        db.execute(statement)


def apply(db: Any) -> None:
    """Apply every pending migration (the caller holds the migration lock)."""
    migrations.apply(db)


@migrations(name="0002_secrets")
def m0002_secrets(db: Any) -> None:
    # Fernet tokens only; the key is never in the workspace (see mlws.keyvault).
    db.execute(
        """CREATE TABLE secrets (
            name TEXT PRIMARY KEY,
            value BLOB NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL
        )"""
    )


@migrations(name="0003_environments")
def m0003_environments(db: Any) -> None:
    db.execute(
        """CREATE TABLE environments (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            spec TEXT NOT NULL,
            spec_hash TEXT,
            created REAL NOT NULL,
            PRIMARY KEY (name, version)
        )"""
    )
    # One row per (spec, machine): where it was built and what pip resolved.
    db.execute(
        """CREATE TABLE environment_builds (
            spec_hash TEXT NOT NULL,
            host TEXT NOT NULL,
            path TEXT NOT NULL,
            python TEXT NOT NULL,
            tool TEXT NOT NULL,
            freeze TEXT,
            seconds REAL,
            created REAL NOT NULL,
            PRIMARY KEY (spec_hash, host)
        )"""
    )


@migrations(name="0004_models")
def m0004_models(db: Any) -> None:
    # One row per model version. The files are a manifest blob (identical files are shared
    # across versions); tags, properties and dataset lineage are JSON (a registry holds
    # hundreds of versions, not millions).
    db.execute(
        """CREATE TABLE models (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            manifest TEXT NOT NULL,
            path TEXT NOT NULL,
            description TEXT,
            framework TEXT,
            framework_version TEXT,
            tags TEXT NOT NULL DEFAULT '{}',
            properties TEXT NOT NULL DEFAULT '{}',
            datasets TEXT NOT NULL DEFAULT '[]',
            run_id TEXT,
            experiment TEXT,
            created REAL NOT NULL,
            created_by TEXT,
            PRIMARY KEY (name, version)
        )"""
    )
    db.execute("CREATE INDEX models_run ON models(run_id)")


@migrations(name="0005_services")
def m0005_services(db: Any) -> None:
    # A deployed service: its definition (models, inference and deployment configuration), its
    # live facts (supervising process, port, state) and a generation counter that an update
    # bumps (the supervisor rolls replicas to it). Keys live in the key vault.
    db.execute(
        """CREATE TABLE services (
            name TEXT PRIMARY KEY,
            models TEXT NOT NULL,
            config TEXT NOT NULL,
            state TEXT NOT NULL,
            host TEXT NOT NULL,
            port INTEGER,
            generation INTEGER NOT NULL DEFAULT 1,
            applied_generation INTEGER NOT NULL DEFAULT 0,
            machine TEXT NOT NULL,
            supervisor_pid INTEGER,
            supervisor_start REAL,
            error TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL
        )"""
    )
    # Request telemetry (App Insights' part), written in batches by the supervisor.
    db.execute(
        """CREATE TABLE service_requests (
            service TEXT NOT NULL,
            time REAL NOT NULL,
            path TEXT NOT NULL,
            status INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            request_bytes INTEGER NOT NULL,
            response_bytes INTEGER NOT NULL,
            request_id TEXT,
            replica INTEGER,
            input TEXT,
            output TEXT
        )"""
    )
    db.execute("CREATE INDEX service_requests_service_time ON service_requests(service, time)")


@migrations(name="0006_datastores")
def m0006_datastores(db: Any) -> None:
    # Named places where data lives. The default ``workspaceblobstore`` is the workspace's own
    # ``datastores/workspaceblobstore`` folder; a ``local`` one is a folder of this machine.
    db.execute(
        """CREATE TABLE datastores (
            name TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            config TEXT NOT NULL DEFAULT '{}',
            is_default INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL
        )"""
    )
    db.execute(
        """INSERT INTO datastores (name, type, config, is_default, created)
           VALUES ('workspaceblobstore', 'workspace', '{}', 1, strftime('%s','now'))"""
    )


@migrations(name="0007_datasets")
def m0007_datasets(db: Any) -> None:
    # A version's definition (where its data is) and its fingerprint: a manifest blob of the
    # file hashes at registration (the files themselves are not copied into the blob store).
    db.execute(
        """CREATE TABLE datasets (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            definition TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            description TEXT,
            tags TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            PRIMARY KEY (name, version)
        )"""
    )


@migrations(name="0008_run_datasets")
def m0008_run_datasets(db: Any) -> None:
    # Lineage both ways: which dataset versions a run read and wrote. ``content`` is the
    # fingerprint (a manifest blob) of the data the run actually got, ``changed`` whether it
    # differed from the version's registered fingerprint; ``definition`` keeps an unregistered
    # dataset's definition.
    db.execute(
        """CREATE TABLE run_datasets (
            run_seq INTEGER NOT NULL REFERENCES runs(seq),
            direction TEXT NOT NULL CHECK (direction IN ('input', 'output')),
            name TEXT NOT NULL,
            mode TEXT NOT NULL,
            dataset_name TEXT,
            dataset_version INTEGER,
            definition TEXT NOT NULL,
            content TEXT,
            changed INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (run_seq, direction, name)
        )"""
    )
    db.execute(
        "CREATE INDEX run_datasets_by_dataset ON run_datasets (dataset_name, dataset_version)"
    )


@migrations(name="0009_model_versions")
def m0009_model_versions(db: Any) -> None:
    # The highest version ever given to each model name. Deleting the latest version must not
    # free its number (v1: versions only count up), so the next version cannot be derived from
    # the rows that are left. Seeded from the registry as it is.
    db.execute(
        """CREATE TABLE model_versions (
            name TEXT PRIMARY KEY,
            last INTEGER NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute(
        "INSERT INTO model_versions (name, last) SELECT name, max(version) FROM models GROUP BY name"
    )


@migrations(name="0010_step_fingerprints")
def m0010_step_fingerprints(db: Any) -> None:
    # A pipeline step's fingerprint (its name, source snapshot, arguments, environment, target
    # type and the content of every input) per step run that completed by running: a later step
    # with the same fingerprint is reused instead of run. The index makes that lookup one query.
    db.execute(
        """CREATE TABLE step_fingerprints (
            fingerprint TEXT NOT NULL,
            run_seq INTEGER NOT NULL REFERENCES runs(seq),
            step_name TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (run_seq)
        )"""
    )
    db.execute("CREATE INDEX step_fingerprints_by_fingerprint ON step_fingerprints (fingerprint)")


@migrations(name="0011_published_pipelines")
def m0011_published_pipelines(db: Any) -> None:
    # A published pipeline is frozen: its definition (steps with their source snapshots, the
    # parameters' defaults) is stored whole, so later edits of the source folders change nothing.
    db.execute(
        """CREATE TABLE published_pipelines (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            description TEXT,
            version TEXT,
            status TEXT NOT NULL,
            continue_on_step_failure INTEGER,
            definition TEXT NOT NULL,
            created REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE pipeline_endpoints (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            description TEXT,
            status TEXT NOT NULL,
            default_version TEXT NOT NULL,
            created REAL NOT NULL
        )"""
    )
    # Versions only count up ("0", "1", ...): the next one is max(version) + 1, and a version
    # once given keeps its pipeline.
    db.execute(
        """CREATE TABLE pipeline_endpoint_versions (
            endpoint_id TEXT NOT NULL REFERENCES pipeline_endpoints(id),
            version INTEGER NOT NULL,
            pipeline_id TEXT NOT NULL REFERENCES published_pipelines(id),
            created REAL NOT NULL,
            PRIMARY KEY (endpoint_id, version)
        ) WITHOUT ROWID"""
    )
    # last_fire: when the schedule last fired (the scheduler's next firing is computed from
    # it, so firings missed while no scheduler ran collapse into one); data_fingerprint: the
    # content of a data-change schedule's datastore path when last looked at.
    db.execute(
        """CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            description TEXT,
            status TEXT NOT NULL,
            pipeline_id TEXT REFERENCES published_pipelines(id),
            pipeline_endpoint_id TEXT REFERENCES pipeline_endpoints(id),
            experiment_name TEXT NOT NULL,
            recurrence TEXT,
            pipeline_parameters TEXT NOT NULL DEFAULT '{}',
            datastore TEXT,
            path_on_datastore TEXT,
            polling_interval REAL,
            continue_on_step_failure INTEGER,
            created REAL NOT NULL,
            last_fire REAL,
            last_poll REAL,
            data_fingerprint TEXT,
            last_run_id TEXT,
            last_error TEXT
        )"""
    )


@migrations(name="0012_server_tokens")
def m0012_server_tokens(db: Any) -> None:
    # The users of ``mlws serve``: one bearer token each, stored as the sha256 of the token
    # (never the token itself), and the Azure built-in role it acts with.
    db.execute(
        """CREATE TABLE server_tokens (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('reader', 'contributor', 'owner')),
            hash TEXT NOT NULL UNIQUE,
            created REAL NOT NULL,
            created_by TEXT
        )"""
    )


@migrations(name="0013_run_leases")
def m0013_run_leases(db: Any) -> None:
    # A run created over HTTP (``mlws serve``) is held by its client: ``lease_seen`` is when the
    # server last heard from it (NULL for every other run). The partial index keeps the server's
    # periodic "whose client is gone?" query cheap: it holds only open runs that have a lease.
    db.execute("ALTER TABLE runs ADD COLUMN lease_seen REAL")
    db.execute(
        "CREATE INDEX runs_lease ON runs(lease_seen)"
        " WHERE status NOT IN ('Completed', 'Failed', 'Canceled')"
    )


@migrations(name="0014_request_ids")
def m0014_request_ids(db: Any) -> None:
    # The ids of metric batches a client sent with a ``batchId`` (``mlws serve``), inserted in the
    # transaction that writes the batch's values: a batch re-sent after a lost answer (the server
    # killed between commit and reply, a client's retry) is recognised and not applied twice.
    # The primary key answers "applied already?"; the index on ``created`` lets the server prune
    # old ids of ended runs without reading the others.
    db.execute(
        """CREATE TABLE metric_batches (
            run_seq INTEGER NOT NULL,
            batch_id TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (run_seq, batch_id)
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX metric_batches_created ON metric_batches(created)")
    # The same for model versions registered with a ``registrationId``: a registration re-sent
    # after a lost answer gets the version made the first time, not a second one.
    db.execute(
        """CREATE TABLE model_registrations (
            request_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            created REAL NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX model_registrations_version ON model_registrations(name, version)")


@migrations(name="0015_dataset_registrations")
def m0015_dataset_registrations(db: Any) -> None:
    # Who registered each dataset version (v1's ``createdBy``: the token's user on a served
    # workspace, the login elsewhere; NULL for versions made before), and the ids of dataset
    # registrations sent with a ``registrationId`` (``mlws serve``): a registration re-sent
    # after a lost answer gets the version made the first time, as model_registrations does.
    db.execute("ALTER TABLE datasets ADD COLUMN created_by TEXT")
    db.execute(
        """CREATE TABLE dataset_registrations (
            request_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            created REAL NOT NULL
        ) WITHOUT ROWID"""
    )


@migrations(name="0016_remote_concepts")
def m0016_remote_concepts(db: Any) -> None:
    # Who registered each environment version (``createdBy``, as v1 shows it): the token's user
    # on a served workspace; NULL for versions registered on the workspace's own machine.
    db.execute("ALTER TABLE environments ADD COLUMN created_by TEXT")
    # Services deployed from a client of ``mlws serve``: they run on the machine that called
    # ``Model.deploy`` (its own ``services`` row lives there); the server keeps this record of
    # them (what the team sees: name, models, scoring URI, last reported state).
    db.execute(
        """CREATE TABLE service_records (
            name TEXT PRIMARY KEY,
            models TEXT NOT NULL,
            scoring_uri TEXT,
            state TEXT NOT NULL,
            machine TEXT NOT NULL,
            error TEXT,
            created REAL NOT NULL,
            created_by TEXT,
            updated REAL NOT NULL
        )"""
    )
