import Foundation

/// One step of the schema, applied once, in order, inside the runner's transaction.
struct Migration: Sendable {
    let version: Int
    let name: String
    let apply: @Sendable (any SQLQuerying) async throws -> Void
}

/// Versioned, ordered migrations for both back ends. `schema_migrations` records each applied
/// step. The runner holds a lock for the whole run (PostgreSQL: a transaction-scoped advisory
/// lock; SQLite: the write transaction), so replicas starting together apply each step once. A
/// database whose schema is newer than this build knows is refused: an older replica must not
/// write to it.
enum Migrations {
    static let all: [Migration] = [
        Migration(version: 1, name: "fleet, access, telemetry, failures, trials, quarantine", apply: baseline),
        Migration(version: 2, name: "leader lease", apply: leaderLease),
        Migration(version: 3, name: "cell revisions", apply: cellRevisions),
        Migration(version: 4, name: "prior releases per rollout", apply: rolloutPriorReleases),
        Migration(version: 5, name: "labels, targeted rollouts, waves, maintenance windows", apply: targeting),
        Migration(
            version: 6, name: "change revisions of device cells and labels, latest install outcome and runtime metrics per device",
            apply: ChangeRevisions.migrate),
        Migration(version: 7, name: "runtime metrics in typed columns", apply: RuntimeMetricsColumns.migrate),
        Migration(version: 8, name: "digest of each device's facts, assignments by release", apply: checkInReads),
        Migration(version: 9, name: "room on device pages for updates in place", apply: devicePageRoom)
    ]
    static var latest: Int { all.last!.version }
    /// Any number; the same in every replica.
    static let advisoryLockKey: Int64 = 0x4564_6765_466C_74  // "EdgeFlt"

    struct Outcome: Sendable, Equatable {
        var from: Int
        var to: Int
        var applied: [String]
    }

    /// The schema version the database is at (0: empty).
    static func version(_ db: any SQLQuerying) async throws -> Int {
        let exists: Bool
        switch db.dialect {
        case .sqlite:
            exists = !(try await db.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'", [])).isEmpty
        case .postgres:
            exists = try await db.scalar("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").int == 1
        }
        guard exists else { return 0 }
        return Int(try await db.scalar("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").int ?? 0)
    }

    /// Brings the schema to `latest`; throws `schemaTooNew` (and changes nothing) when it is ahead.
    @discardableResult
    /// `through`: stop at that version (tests make databases as earlier builds left them).
    static func run(_ db: any SQLDatabase, now: Int64 = Int64(Date().timeIntervalSince1970), through: Int? = nil) async throws -> Outcome {
        try await db.transaction { tx in
            if tx.dialect == .postgres {
                try await tx.execute("SELECT pg_advisory_xact_lock(?)", [advisoryLockKey])
            }
            try await tx.execute(
                tx.dialect.ddl(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)
                    """))
            let current = Int(try await tx.scalar("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").int ?? 0)
            guard current <= latest else { throw tooNew(current) }
            var applied: [String] = []
            for m in all where m.version > current && m.version <= (through ?? latest) {
                try await m.apply(tx)
                try await tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)", [m.version, m.name, now])
                applied.append("\(m.version) \(m.name)")
            }
            return Outcome(from: current, to: max(current, through ?? latest), applied: applied)
        }
    }

    /// Refuses a database this build cannot serve, without changing it.
    static func check(_ db: any SQLDatabase) async throws -> Int {
        let v = try await version(db)
        guard v <= latest else { throw tooNew(v) }
        return v
    }

    private static func tooNew(_ version: Int) -> StorageError {
        StorageError(
            .schemaTooNew, "the database is at schema version \(version); this controller knows up to \(latest): upgrade the controller")
    }

    // MARK: steps

    /// The schema as it stood before versions were recorded. Every statement is idempotent, so a
    /// SQLite file made by an earlier build (tables present, no `schema_migrations`) comes through
    /// it unchanged, with the columns added since then filled in.
    private static func baseline(_ tx: any SQLQuerying) async throws {
        let d = tx.dialect
        let tables = [
            """
            CREATE TABLE IF NOT EXISTS devices (
                id TEXT PRIMARY KEY, facts TEXT NOT NULL, hardware_class TEXT, tier TEXT,
                installed TEXT NOT NULL, phase TEXT, status TEXT NOT NULL, status_detail TEXT,
                held TEXT NOT NULL, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, agent_version TEXT)
            """,
            "CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, min_quality REAL, created_at INTEGER NOT NULL)",
            """
            CREATE TABLE IF NOT EXISTS variants (
                model TEXT NOT NULL REFERENCES models(name), name TEXT NOT NULL, body TEXT NOT NULL,
                quality REAL, created_at INTEGER NOT NULL, PRIMARY KEY (model, name))
            """,
            """
            CREATE TABLE IF NOT EXISTS releases (
                id TEXT PRIMARY KEY, model TEXT NOT NULL REFERENCES models(name), version TEXT NOT NULL,
                serial INTEGER NOT NULL, envelope TEXT NOT NULL, catalog_sha256 TEXT NOT NULL,
                created_at INTEGER NOT NULL, UNIQUE (model, serial))
            """,
            """
            CREATE TABLE IF NOT EXISTS rollouts (
                id INTEGER PRIMARY KEY AUTOINCREMENT, release_id TEXT NOT NULL REFERENCES releases(id),
                model TEXT NOT NULL, strategy TEXT NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL,
                policy TEXT, previous_release TEXT, created_by TEXT NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS rollout_cells (
                rollout_id INTEGER NOT NULL REFERENCES rollouts(id), cell TEXT NOT NULL, body TEXT NOT NULL,
                PRIMARY KEY (rollout_id, cell))
            """,
            """
            CREATE TABLE IF NOT EXISTS rollout_actions (
                id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id INTEGER NOT NULL, at INTEGER NOT NULL,
                actor TEXT NOT NULL, action TEXT NOT NULL, cell TEXT, detail TEXT)
            """,
            """
            CREATE TABLE IF NOT EXISTS assignments (
                device_id TEXT NOT NULL, model TEXT NOT NULL, counter INTEGER NOT NULL, release_id TEXT NOT NULL,
                variant TEXT NOT NULL, sha256 TEXT NOT NULL, package_sha256 TEXT NOT NULL, envelope TEXT NOT NULL,
                expires_at INTEGER NOT NULL, PRIMARY KEY (device_id, model))
            """,
            """
            CREATE TABLE IF NOT EXISTS deltas (
                base_sha256 TEXT NOT NULL, target_sha256 TEXT NOT NULL, status TEXT NOT NULL, package_sha256 TEXT,
                package_size INTEGER, method TEXT, detail TEXT, created_at INTEGER NOT NULL,
                PRIMARY KEY (base_sha256, target_sha256))
            """,
            """
            CREATE TABLE IF NOT EXISTS events (
                device_id TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL, kind TEXT NOT NULL,
                model TEXT, sha256 TEXT, release TEXT, detail TEXT, received_at INTEGER NOT NULL,
                fault TEXT, retry_at INTEGER, PRIMARY KEY (device_id, seq))
            """,
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            // Telemetry
            """
            CREATE TABLE IF NOT EXISTS rollout_history (
                id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id INTEGER NOT NULL, cell TEXT NOT NULL, at INTEGER NOT NULL, body TEXT NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS device_telemetry (
                device_id TEXT PRIMARY KEY, events_dropped INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS rollout_devices (
                rollout_id INTEGER NOT NULL, device_id TEXT NOT NULL, prior_release TEXT, prior_sha256 TEXT,
                assigned_at INTEGER NOT NULL, PRIMARY KEY (rollout_id, device_id))
            """,
            // Access
            """
            CREATE TABLE IF NOT EXISTS api_tokens (
                hash TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, role TEXT NOT NULL,
                created_at INTEGER NOT NULL, created_by TEXT NOT NULL, expires_at INTEGER, revoked_at INTEGER,
                last_used_at INTEGER)
            """,
            """
            CREATE TABLE IF NOT EXISTS enrollment_tokens (
                hash TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, device_id TEXT, created_at INTEGER NOT NULL,
                created_by TEXT NOT NULL, expires_at INTEGER NOT NULL, require_approval INTEGER NOT NULL,
                used_at INTEGER, used_by TEXT)
            """,
            """
            CREATE TABLE IF NOT EXISTS device_identities (
                device_id TEXT PRIMARY KEY, status TEXT NOT NULL, fingerprint TEXT, enrolled_at INTEGER NOT NULL,
                enrollment_token TEXT NOT NULL, facts TEXT, decided_by TEXT, decided_at INTEGER)
            """,
            """
            CREATE TABLE IF NOT EXISTS audit_log (
                id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, actor TEXT NOT NULL, role TEXT,
                method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, outcome TEXT NOT NULL, detail TEXT)
            """,
            "CREATE TABLE IF NOT EXISTS root_versions (version INTEGER PRIMARY KEY, envelope TEXT NOT NULL, added_at INTEGER NOT NULL)",
            // Reports, failures, deliveries, trials, quarantine
            "CREATE TABLE IF NOT EXISTS variant_reports (model TEXT NOT NULL, name TEXT NOT NULL, report TEXT NOT NULL, PRIMARY KEY (model, name))",
            """
            CREATE TABLE IF NOT EXISTS device_failures (
                device_id TEXT NOT NULL, model TEXT NOT NULL, release TEXT NOT NULL, sha256 TEXT, kind TEXT NOT NULL,
                fault TEXT, detail TEXT, at INTEGER NOT NULL, retried_at INTEGER, retried_by TEXT,
                PRIMARY KEY (device_id, model, release))
            """,
            """
            CREATE TABLE IF NOT EXISTS deliveries (
                device_id TEXT NOT NULL, model TEXT NOT NULL, release_id TEXT NOT NULL, counter INTEGER NOT NULL,
                sha256 TEXT NOT NULL, package_sha256 TEXT NOT NULL, PRIMARY KEY (device_id, model, counter))
            """,
            """
            CREATE TABLE IF NOT EXISTS trials (
                id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, release TEXT NOT NULL, hardware_class TEXT NOT NULL,
                variants TEXT NOT NULL, devices TEXT NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS artifact_quarantine (
                sha256 TEXT PRIMARY KEY, actual_sha256 TEXT NOT NULL, size INTEGER NOT NULL,
                quarantined_at INTEGER NOT NULL, found_by TEXT NOT NULL, path TEXT NOT NULL)
            """
        ]
        for t in tables { try await tx.execute(d.ddl(t)) }
        if d == .sqlite { try await sqliteLegacyColumns(tx) }
        let indexes = [
            "CREATE INDEX IF NOT EXISTS events_release ON events (release, kind)",
            "CREATE INDEX IF NOT EXISTS events_model ON events (model, kind, time)",
            "CREATE INDEX IF NOT EXISTS events_model_received ON events (model, kind, received_at)",
            "CREATE INDEX IF NOT EXISTS rollout_history_cell ON rollout_history (rollout_id, cell, at)",
            "CREATE INDEX IF NOT EXISTS audit_actor ON audit_log (actor, id)",
            "CREATE INDEX IF NOT EXISTS identity_fingerprint ON device_identities (fingerprint)",
            "CREATE INDEX IF NOT EXISTS device_failures_release ON device_failures (release, retried_at)",
            "CREATE INDEX IF NOT EXISTS deliveries_release ON deliveries (release_id, device_id)"
        ]
        for i in indexes { try await tx.execute(i) }
    }

    /// Files made before events carried a fault code and a retry time, and before history points
    /// had an id of their own.
    private static func sqliteLegacyColumns(_ tx: any SQLQuerying) async throws {
        let eventColumns = Set(try await tx.query("PRAGMA table_info(events)").compactMap { try $0.optionalString("name") })
        if !eventColumns.contains("fault") { try await tx.execute("ALTER TABLE events ADD COLUMN fault TEXT") }
        if !eventColumns.contains("retry_at") { try await tx.execute("ALTER TABLE events ADD COLUMN retry_at INTEGER") }
        let historyColumns = Set(try await tx.query("PRAGMA table_info(rollout_history)").compactMap { try $0.optionalString("name") })
        if !historyColumns.contains("id") {
            try await tx.execute("ALTER TABLE rollout_history RENAME TO rollout_history_old")
            try await tx.execute(
                """
                CREATE TABLE rollout_history (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id INTEGER NOT NULL, cell TEXT NOT NULL, at INTEGER NOT NULL, body TEXT NOT NULL)
                """)
            try await tx.execute(
                """
                INSERT INTO rollout_history (id, rollout_id, cell, at, body) SELECT rowid, rollout_id, cell, at, body FROM rollout_history_old
                """)
            try await tx.execute("DROP TABLE rollout_history_old")
            try await tx.execute("DROP INDEX IF EXISTS rollout_history_cell")
        }
    }

    /// Cells are replaced only at the revision they were read at (a tick on the leader and an
    /// operator's action on another replica cannot overwrite each other).
    private static func cellRevisions(_ tx: any SQLQuerying) async throws {
        try await tx.execute(tx.dialect.ddl("ALTER TABLE rollout_cells ADD COLUMN revision INTEGER NOT NULL DEFAULT 0"))
    }

    /// The distinct releases a rollout's devices ran before it, kept apart from the per-device rows:
    /// every check-in's timestamp names them, and a DISTINCT over every device the rollout reached
    /// grows with the rollout.
    private static func rolloutPriorReleases(_ tx: any SQLQuerying) async throws {
        try await tx.execute(
            tx.dialect.ddl(
                """
                CREATE TABLE IF NOT EXISTS rollout_prior_releases (rollout_id INTEGER NOT NULL, release TEXT NOT NULL, PRIMARY KEY (rollout_id, release))
                """))
        try await tx.execute(
            """
            INSERT INTO rollout_prior_releases (rollout_id, release)
            SELECT DISTINCT rollout_id, prior_release FROM rollout_devices WHERE prior_release IS NOT NULL
            ON CONFLICT (rollout_id, release) DO NOTHING
            """)
    }

    /// Labels from three sources: the device's own (in its facts, copied to `agent_labels` for
    /// selection without decoding facts), the enrollment token's and the operator's (a table of
    /// their own, so that a device's check-in never writes over an operator's change); the arch
    /// and configured zone for selectors and windows; rollouts' selector, window and current wave;
    /// assignments' activation windows.
    private static func targeting(_ tx: any SQLQuerying) async throws {
        let d = tx.dialect
        for column in ["arch TEXT", "timezone TEXT", "agent_labels TEXT NOT NULL DEFAULT '{}'"] {
            try await tx.execute(d.ddl("ALTER TABLE devices ADD COLUMN \(column)"))
        }
        switch d {
        case .sqlite:
            try await tx.execute(
                """
                UPDATE devices SET arch = json_extract(facts, '$.arch'), timezone = json_extract(facts, '$.timezone'),
                  agent_labels = COALESCE(json_extract(facts, '$.labels'), '{}')
                """)
        case .postgres:
            try await tx.execute(
                """
                UPDATE devices SET arch = facts::jsonb ->> 'arch', timezone = facts::jsonb ->> 'timezone',
                  agent_labels = COALESCE(facts::jsonb -> 'labels', '{}'::jsonb)::text
                """)
        }
        try await tx.execute(
            d.ddl(
                """
                CREATE TABLE IF NOT EXISTS device_labels (
                    device_id TEXT PRIMARY KEY, enrolled TEXT NOT NULL DEFAULT '{}', operator TEXT NOT NULL DEFAULT '{}')
                """))
        try await tx.execute(d.ddl("ALTER TABLE enrollment_tokens ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'"))
        for column in ["selector TEXT NOT NULL DEFAULT ''", "activation_window TEXT", "wave INTEGER NOT NULL DEFAULT 0"] {
            try await tx.execute(d.ddl("ALTER TABLE rollouts ADD COLUMN \(column)"))
        }
        try await tx.execute(d.ddl("ALTER TABLE assignments ADD COLUMN activation TEXT"))
    }

    /// Work that runs once across replicas (the rollout driver, the delta planner, the scrub) is
    /// done by the holder of this lease; its epoch grows at each change of holder and fences the
    /// leader's writes.
    private static func leaderLease(_ tx: any SQLQuerying) async throws {
        try await tx.execute(
            tx.dialect.ddl(
                """
                CREATE TABLE IF NOT EXISTS leases (
                    name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch INTEGER NOT NULL, acquired_at INTEGER NOT NULL)
                """))
    }

    /// The digest a frugal check-in names a device's facts by, kept beside them (NULL for rows
    /// written before: worked out from the facts when read, and stored at the next write); a
    /// release's assignments found without reading every assignment (rollout status and list).
    private static func checkInReads(_ tx: any SQLQuerying) async throws {
        try await tx.execute(tx.dialect.ddl("ALTER TABLE devices ADD COLUMN facts_digest TEXT"))
        try await tx.execute("CREATE INDEX IF NOT EXISTS assignments_release ON assignments (release_id)")
    }

    /// PostgreSQL: device rows are written again at every check-in that changes something (the
    /// time seen in batches, held-back models, status, installed models), none of them an indexed
    /// column, so with room on its page a row's new version stays there (a HOT update: no index
    /// entry, less WAL, less to vacuum). Pages filled whole by inserts have no room: a fifth is
    /// left free on pages written from now on. SQLite updates rows in place already.
    private static func devicePageRoom(_ tx: any SQLQuerying) async throws {
        guard tx.dialect == .postgres else { return }
        try await tx.execute("ALTER TABLE devices SET (fillfactor = 80)")
    }
}
