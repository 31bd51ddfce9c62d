import FleetCore
import Foundation
import Logging

/// The controller's store on a SQL database: one SQLite file under the data directory (one box),
/// or PostgreSQL shared by any number of replicas. The same statements serve both; the few that
/// differ ask the dialect.
final class SQLStore: FleetStore {
    let db: any SQLDatabase
    /// Set on a replica that does the once-only work: writes of that work check, in their own
    /// transaction, that this replica still holds the lease it was given (see `LeaderLease`).
    let fence: LeaseFence?
    /// What every check-in reads, kept per process (see `StoreCache`).
    let cache: StoreCache

    init(db: any SQLDatabase, fence: LeaseFence? = nil, cache: StoreCache = StoreCache()) {
        self.db = db
        self.fence = fence
        self.cache = cache
    }

    /// The embedded store: `path` is created when missing and migrated to this build's schema.
    static func sqlite(path: String, cache: StoreCache = StoreCache()) async throws -> SQLStore {
        let db = try SQLiteDatabase(path: path)
        try await Migrations.run(db)
        return SQLStore(db: db, cache: cache)
    }

    /// The shared store. Migrates unless `migrate` is false; then a schema behind or ahead of
    /// this build is refused.
    static func postgres(_ location: PostgresLocation, migrate: Bool, logger: Logger, cache: StoreCache = StoreCache()) async throws
        -> SQLStore
    {
        let db = try await PostgresDatabase.connect(location, logger: logger)
        do {
            if migrate {
                try await Migrations.run(db)
            } else {
                let v = try await Migrations.check(db)
                guard v == Migrations.latest else {
                    throw StorageError(
                        .schemaTooNew,
                        "the database is at schema version \(v), this controller needs \(Migrations.latest): run fleet-controller migrate")
                }
            }
        } catch {
            await db.close()
            throw error
        }
        return SQLStore(db: db, cache: cache)
    }

    /// A store whose writes of the leader's work are fenced by `fence`.
    func fenced(_ fence: LeaseFence) -> SQLStore { SQLStore(db: db, fence: fence, cache: cache) }

    var dialect: SQLDialect { db.dialect }

    // MARK: coding helpers

    func json<T: Encodable>(_ v: T) throws -> String { String(decoding: try FleetJSON.encode(v), as: UTF8.self) }

    /// Runs `body` in one transaction; with a fence, only while this replica holds its lease.
    /// `announcing`: the cached topics it changes, dropped here after the commit and announced to
    /// the other replicas by a NOTIFY that the commit delivers.
    /// `cachedHere: false`: the caller brings this process's cache up to date itself (`patch`).
    func write<T: Sendable>(
        fenced: Bool = false, announcing topics: [StoreCache.Topic] = [], cachedHere: Bool = true,
        _ body: @Sendable @escaping (any SQLQuerying) async throws -> T
    ) async throws -> T {
        try await write(fenced: fenced, cachedHere: cachedHere) { tx in (try await body(tx), topics) }
    }

    /// `write` for a body that finds out what it changed: it returns the topics to announce.
    func write<T: Sendable>(
        fenced: Bool = false, cachedHere: Bool = true,
        _ body: @Sendable @escaping (any SQLQuerying) async throws -> (T, [StoreCache.Topic])
    ) async throws -> T {
        let fence = fenced ? self.fence : nil
        let cache = self.cache
        let (result, topics) = try await db.transaction { tx in
            if let fence { try await fence.check(tx) }
            let (result, topics) = try await body(tx)
            if tx.dialect == .postgres {
                for t in topics { try await tx.execute("SELECT pg_notify(?, ?)", [StoreCache.channel, cache.announcement(t)]) }
            }
            return (result, topics)
        }
        if cachedHere { for t in topics { cache.invalidate(t) } }
        return result
    }

    // MARK: devices

    /// A device row with the labels the enrollment token bound and the operator set.
    private static let deviceSelect = """
        SELECT d.id, d.facts, d.hardware_class, d.tier, d.installed, d.phase, d.status, d.status_detail, d.held, d.first_seen,
          d.last_seen, d.agent_version, d.facts_digest, l.enrolled AS enrolled_labels, l.operator AS operator_labels
        FROM devices d LEFT JOIN device_labels l ON l.device_id = d.id
        """

    func upsertDevice(_ d: DeviceRecord) async throws {
        cache.seen.discard(d.id)  // the whole row is written: what was pending for it is older
        // A check-in's facts and time are repeated by the next check-in: not worth an fsync each.
        // The enrollment's and operator's labels are not written here: only their own commands do.
        try await db.executeRelaxed(
            """
            INSERT INTO devices (id, facts, hardware_class, tier, installed, phase, status, status_detail, held, first_seen, last_seen,
              agent_version, arch, timezone, agent_labels, facts_digest)
            VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
            ON CONFLICT(id) DO UPDATE SET facts=excluded.facts, hardware_class=excluded.hardware_class, tier=excluded.tier,
              installed=excluded.installed, phase=excluded.phase, held=excluded.held, last_seen=excluded.last_seen,
              agent_version=excluded.agent_version, arch=excluded.arch, timezone=excluded.timezone, agent_labels=excluded.agent_labels,
              facts_digest=excluded.facts_digest
            """,
            [
                d.id, try json(d.facts), d.hardwareClass, d.tier, try json(d.installed), d.phase, d.status.rawValue, d.statusDetail,
                try json(d.held), d.firstSeen, d.lastSeen, d.agentVersion, d.facts.arch, d.facts.timezone, try json(d.facts.labels ?? [:]),
                d.probedFactsDigest
            ])
    }

    /// An idle check-in: only the time the device was seen changes, written with others' in one
    /// statement once the batch is due (see `SeenBatch`). A failed write puts the times back and
    /// throws; the next due batch writes them.
    func touchDevice(_ id: String, lastSeen: Int64, held: [String: String]?) async throws {
        guard cache.seen.add(id, at: lastSeen, held: held) else { return }
        try await flushSeen()
    }

    /// Writes what is pending now (`SeenFlusher` calls it when no check-in does, and at shutdown).
    func flushSeen() async throws {
        let pending = cache.seen.take()
        guard !pending.isEmpty else { return }
        let rows = pending.sorted { $0.key < $1.key }
        do {
            // Never moves a time back, nor writes held-back models over a later check-in's
            // (another replica may have written one).
            let times = rows.filter { $0.value.held == nil }
            for part in times.chunks(of: Self.seenPerStatement) {
                try await db.executeRelaxed(
                    """
                    WITH seen (id, t) AS (VALUES \(Array(repeating: "(?, CAST(? AS BIGINT))", count: part.count).joined(separator: ",")))
                    UPDATE devices SET last_seen = seen.t FROM seen WHERE devices.id = seen.id AND devices.last_seen < seen.t
                    """,
                    part.flatMap { [$0.key, $0.value.at] as [any SQLValueConvertible] })
            }
            let held = rows.compactMap { row in row.value.held.map { (row.key, row.value.at, $0) } }
            for part in held.chunks(of: Self.seenPerStatement) {
                var values: [any SQLValueConvertible] = []
                for (id, at, models) in part { values += [id, at, try json(models)] }
                try await db.executeRelaxed(
                    """
                    WITH seen (id, t, held) AS (VALUES \(Array(repeating: "(?, CAST(? AS BIGINT), ?)", count: part.count).joined(separator: ",")))
                    UPDATE devices SET last_seen = seen.t, held = seen.held FROM seen WHERE devices.id = seen.id AND devices.last_seen <= seen.t
                    """,
                    values)
            }
        } catch {
            cache.seen.restore(pending)
            throw error
        }
    }

    static let seenPerStatement = 500

    /// A JSON object of labels as stored; "{}" and NULL without decoding.
    static func labels(_ r: SQLRow, _ column: String) throws -> [String: String] {
        guard let text = try r.optionalString(column), text != "{}" else { return [:] }
        return try r.json([String: String].self, column)
    }

    static func deviceRow(_ r: SQLRow) throws -> DeviceRecord {
        DeviceRecord(
            id: try r.string("id"), facts: try r.json(DeviceFacts.self, "facts"), hardwareClass: try r.optionalString("hardware_class"),
            tier: try r.optionalString("tier"), installed: try r.json([String: String].self, "installed"),
            phase: try r.optionalString("phase"), status: try r.vocabulary(DeviceStatus.self, "status"),
            statusDetail: try r.optionalString("status_detail"),
            held: try r.json([String: String].self, "held"), firstSeen: try r.int("first_seen"), lastSeen: try r.int("last_seen"),
            agentVersion: try r.optionalString("agent_version"), enrolledLabels: try labels(r, "enrolled_labels"),
            operatorLabels: try labels(r, "operator_labels"), factsDigest: try r.optionalString("facts_digest"))
    }

    /// One round trip for a check-in: the key row always comes back, the device's columns NULL
    /// when it never checked in, the access columns NULL when it never enrolled.
    private enum CheckInSelect: HotStatement {
        static let sql = """
            SELECT d.id, d.facts, d.hardware_class, d.tier, d.installed, d.phase, d.status, d.status_detail, d.held, d.first_seen,
              d.last_seen, d.agent_version, d.facts_digest, l.enrolled AS enrolled_labels, l.operator AS operator_labels,
              i.status AS access_status, i.fingerprint AS access_fingerprint
            FROM (SELECT CAST(? AS TEXT) AS id) k LEFT JOIN devices d ON d.id = k.id LEFT JOIN device_labels l ON l.device_id = k.id
              LEFT JOIN device_identities i ON i.device_id = k.id
            """
    }

    func checkInRecords(_ id: String) async throws -> (access: DeviceAccessCheck?, device: DeviceRecord?) {
        guard let r = try await db.query(CheckInSelect.self, [id]).first else { return (nil, nil) }
        let device = try r.optionalString("id") == nil ? nil : cache.seen.overlay(try Self.deviceRow(r))
        return (try Self.accessCheck(r), device)
    }

    func device(_ id: String) async throws -> DeviceRecord? {
        try await db.query("\(Self.deviceSelect) WHERE d.id = ?", [id]).first.map(Self.deviceRow).map(cache.seen.overlay)
    }

    func deviceExists(_ id: String) async throws -> Bool {
        !(try await db.query("SELECT 1 AS present FROM devices WHERE id = ?", [id]).isEmpty)
    }

    func devices() async throws -> [DeviceRecord] {
        try await db.query("\(Self.deviceSelect) ORDER BY d.id", []).map(Self.deviceRow).map(cache.seen.overlay)
    }

    func devices(running model: String) async throws -> [DeviceRecord] {
        guard Name.isValid(model) else { return [] }
        return try await db.query(
            "\(Self.deviceSelect) WHERE \(db.dialect.jsonGet("d.installed")) IS NOT NULL ORDER BY d.id",
            [model]
        ).map(Self.deviceRow).map(cache.seen.overlay)
    }

    func updateOperatorLabels(deviceId: String, set: [String: String], remove: [String]) async throws -> DeviceRecord? {
        try await write { tx in
            guard let device = try await tx.query("\(Self.deviceSelect) WHERE d.id = ?", [deviceId]).first.map(Self.deviceRow) else {
                return nil
            }
            var labels = device.operatorLabels
            for k in remove { labels[k] = nil }
            labels.merge(set) { $1 }
            var after = device
            after.operatorLabels = labels
            // The bound counts what the device ends up with, from every source.
            try LabelRequests.validate(after.labels)
            try await tx.execute(
                """
                INSERT INTO device_labels (device_id, operator) VALUES (?, ?)
                ON CONFLICT(device_id) DO UPDATE SET operator = excluded.operator
                """, [deviceId, try self.json(labels)])
            return after
        }
    }

    func deviceCount() async throws -> Int {
        Int(try await db.scalar("SELECT COUNT(*) AS n FROM devices").int ?? 0)
    }

    func deviceCounts() async throws -> [DeviceCount] {
        try await db.query("SELECT hardware_class, tier, status, COUNT(*) AS n FROM devices GROUP BY hardware_class, tier, status", [])
            .map { r in
                DeviceCount(
                    hardwareClass: try r.optionalString("hardware_class"), tier: try r.optionalString("tier"),
                    status: try r.vocabulary(DeviceStatus.self, "status"), devices: Int(try r.int("n")))
            }
    }

    func deviceStatuses() async throws -> [String: DeviceStatus] {
        var out: [String: DeviceStatus] = [:]
        for r in try await db.query("SELECT id, status FROM devices", []) {
            out[try r.string("id")] = try r.vocabulary(DeviceStatus.self, "status")
        }
        return out
    }

    // MARK: models and variants

    func createModel(_ m: ModelRecord) async throws {
        do {
            try await write(announcing: [.models]) { tx in
                try await tx.execute(
                    "INSERT INTO models (name, min_quality, created_at) VALUES (?,?,?)", [m.name, m.minQuality, m.createdAt])
            }
        } catch let e as StorageError where e.code == .conflict {
            throw StorageError(.conflict, "model \(m.name) already exists")
        }
    }

    private static func modelRow(_ r: SQLRow) throws -> ModelRecord {
        ModelRecord(name: try r.string("name"), minQuality: try r.optionalDouble("min_quality"), createdAt: try r.int("created_at"))
    }

    func model(_ name: String) async throws -> ModelRecord? {
        try await cache.value(.models, name) {
            try await db.query("SELECT name, min_quality, created_at FROM models WHERE name = ?", [name]).first.map(Self.modelRow)
        }
    }

    func models() async throws -> [ModelRecord] {
        try await db.query("SELECT name, min_quality, created_at FROM models ORDER BY name", []).map(Self.modelRow)
    }

    func addVariant(_ v: VariantRecord) async throws {
        let body = try json(v.variant)
        do {
            try await write(announcing: [.variants]) { tx in
                try await tx.execute(
                    "INSERT INTO variants (model, name, body, quality, created_at) VALUES (?,?,?,?,?)",
                    [v.model, v.variant.name, body, v.quality, v.createdAt])
            }
        } catch let e as StorageError where e.code == .conflict {
            throw StorageError(.conflict, "variant \(v.variant.name) of \(v.model) already exists")
        }
    }

    func variants(model: String) async throws -> [VariantRecord] {
        try await cache.value(.variants, model) {
            try await db.query("SELECT model, body, quality, created_at FROM variants WHERE model = ? ORDER BY name", [model]).map {
                VariantRecord(
                    model: try $0.string("model"), variant: try $0.json(CatalogVariant.self, "body"),
                    quality: try $0.optionalDouble("quality"), createdAt: try $0.int("created_at"))
            }
        }
    }

    // MARK: releases and rollouts

    func createRelease(_ r: ReleaseRecord) async throws {
        do {
            try await db.execute(
                "INSERT INTO releases (id, model, version, serial, envelope, catalog_sha256, created_at) VALUES (?,?,?,?,?,?,?)",
                [r.id, r.model, r.version, r.serial, try json(r.catalogEnvelope), r.catalogSha256, r.createdAt])
        } catch let e as StorageError where e.code == .conflict {
            throw StorageError(.conflict, "release \(r.id) or serial \(r.serial) of \(r.model) already exists")
        }
    }

    private static func releaseRow(_ r: SQLRow) throws -> ReleaseRecord {
        let id = try r.string("id")
        let env = try r.json(Envelope.self, "envelope")
        guard let body = env.payloadBytes, let catalog = try? JSONDecoder().decode(ReleaseCatalog.self, from: Data(body)) else {
            throw StorageError(.corrupt, "stored catalog of \(id) does not decode")
        }
        return ReleaseRecord(
            id: id, model: try r.string("model"), version: try r.string("version"), serial: Int(try r.int("serial")),
            catalogEnvelope: env, catalogSha256: try r.string("catalog_sha256"), catalog: catalog, createdAt: try r.int("created_at"))
    }

    private static let releaseColumns = "id, model, version, serial, envelope, catalog_sha256, created_at"

    /// Releases never change once made: decoded once per process.
    func release(_ id: String) async throws -> ReleaseRecord? {
        if let hit = cache.release(id) { return hit }
        guard let r = try await db.query("SELECT \(Self.releaseColumns) FROM releases WHERE id = ?", [id]).first.map(Self.releaseRow) else {
            return nil
        }
        cache.keep(release: r)
        return r
    }

    func releases() async throws -> [ReleaseRecord] {
        try await db.query("SELECT \(Self.releaseColumns) FROM releases ORDER BY model, serial", []).map(Self.releaseRow)
    }

    func maxSerial(model: String) async throws -> Int {
        Int(try await db.scalar("SELECT COALESCE(MAX(serial), 0) AS serial FROM releases WHERE model = ?", [model]).int ?? 0)
    }

    static let rolloutColumns =
        "id, release_id, model, strategy, state, created_at, policy, previous_release, created_by, selector, activation_window, wave"

    static func rolloutRow(_ r: SQLRow) throws -> RolloutRecord {
        let selectorText = try r.string("selector")
        let selector: LabelSelector
        do { selector = try LabelSelector(parsing: selectorText) } catch {
            throw StorageError(.corrupt, "rollout \(try r.int("id")) has a selector that does not parse: \(error)")
        }
        return RolloutRecord(
            id: try r.int("id"), releaseId: try r.string("release_id"), model: try r.string("model"), strategy: try r.string("strategy"),
            state: try Self.rolloutState(r), createdAt: try r.int("created_at"),
            policy: try r.optionalJSON(RolloutPolicy.self, "policy"), previousReleaseId: try r.optionalString("previous_release"),
            createdBy: try r.string("created_by"), selector: selector,
            window: try r.optionalJSON(MaintenanceWindow.self, "activation_window"), wave: Int(try r.int("wave")))
    }

    func createRollout(_ r: RolloutRecord, superseding: [Int64]) async throws -> RolloutRecord {
        let policy = try r.policy.map(json)
        let window = try r.window.map(json)
        return try await write(announcing: [.rollouts]) { tx in
            for id in superseding {
                try await tx.execute(
                    "UPDATE rollouts SET state = \(SQLVocabulary.literal(RolloutState.superseded)) WHERE id = ? AND model = ? AND state IN \(Self.inForceSQL)",
                    [id, r.model])
            }
            let rows = try await tx.query(
                """
                INSERT INTO rollouts (release_id, model, strategy, state, created_at, policy, previous_release, created_by, selector, activation_window)
                VALUES (?,?,?,\(SQLVocabulary.literal(RolloutState.active)),?,?,?,?,?,?) RETURNING \(Self.rolloutColumns)
                """,
                [r.releaseId, r.model, r.strategy, r.createdAt, policy, r.previousReleaseId, r.createdBy, r.selector.description, window])
            guard let row = rows.first else { throw StorageError(.database, "insert returned no row") }
            return try Self.rolloutRow(row)
        }
    }

    func rollout(_ id: Int64) async throws -> RolloutRecord? {
        try await db.query("SELECT \(Self.rolloutColumns) FROM rollouts WHERE id = ?", [id]).first.map(Self.rolloutRow)
    }

    func rollouts() async throws -> [RolloutRecord] {
        try await db.query("SELECT \(Self.rolloutColumns) FROM rollouts ORDER BY id", []).map(Self.rolloutRow)
    }

    func activeRollouts() async throws -> [RolloutRecord] {
        try await cache.value(.rollouts, "in-force") {
            try await db.query(
                "SELECT \(Self.rolloutColumns) FROM rollouts WHERE state IN \(Self.inForceSQL) ORDER BY id", []
            )
            .map(Self.rolloutRow)
        }
    }

    static func rolloutState(_ r: SQLRow) throws -> RolloutState {
        let text = try r.string("state")
        guard let s = RolloutState(rawValue: text) else {
            throw StorageError(.corrupt, "rollout state '\(text)' is not one this build knows")
        }
        return s
    }

    func setRolloutState(_ id: Int64, _ state: RolloutState) async throws {
        try await write(fenced: true, announcing: [.rollouts]) { tx in
            try await tx.execute("UPDATE rollouts SET state = ? WHERE id = ?", [state.rawValue, id])
        }
    }

    func setRolloutWave(_ id: Int64, _ wave: Int) async throws {
        try await write(fenced: true, announcing: [.rollouts]) { tx in
            try await tx.execute("UPDATE rollouts SET wave = ? WHERE id = ? AND wave < ?", [wave, id, wave])
        }
    }

    func cells(rollout: Int64) async throws -> [CellKey: StoredCell] {
        try await cache.value(.cells, "\(rollout)") { try await freshCells(rollout: rollout) }
    }

    /// The cells as stored now, past the cache: for a decision that must not act on a stale copy.
    func freshCells(rollout: Int64) async throws -> [CellKey: StoredCell] {
        var out: [CellKey: StoredCell] = [:]
        for r in try await db.query("SELECT cell, body, revision FROM rollout_cells WHERE rollout_id = ?", [rollout]) {
            guard let key = CellKey(parsing: try r.string("cell")) else {
                throw StorageError(.corrupt, "cell name \(try r.string("cell")) is not CLASS/TIER or WAVE:CLASS/TIER")
            }
            var cell = try r.json(StoredCell.self, "body")
            cell.revision = try r.int("revision")
            out[key] = cell
        }
        return out
    }

    /// One cell as stored now, past the cache (a check-in about to send a rollout's release).
    func freshCell(rollout: Int64, _ key: CellKey) async throws -> StoredCell? {
        guard
            let r = try await db.query(
                "SELECT body, revision FROM rollout_cells WHERE rollout_id = ? AND cell = ?", [rollout, key.description]
            )
            .first
        else { return nil }
        var cell = try r.json(StoredCell.self, "body")
        cell.revision = try r.int("revision")
        return cell
    }

    func saveCell(rollout: Int64, _ key: CellKey, _ cell: StoredCell) async throws {
        let body = try json(cell)
        let rows = try await write(fenced: true, announcing: [.cells], cachedHere: false) { tx in
            try await tx.query(
                """
                INSERT INTO rollout_cells (rollout_id, cell, body) VALUES (?,?,?)
                ON CONFLICT(rollout_id, cell) DO UPDATE SET body = excluded.body, revision = rollout_cells.revision + 1
                RETURNING revision
                """, [rollout, key.description, body])
        }
        guard let row = rows.first else { return cache.invalidate(.cells) }
        keepWritten(rollout: rollout, key, cell, revision: try row.int("revision"))
    }

    /// A cell this process wrote, put into its cached copy of the rollout's cells (the tick writes
    /// each cell in turn: dropping the copy at each write had check-ins read them all again).
    private func keepWritten(rollout: Int64, _ key: CellKey, _ cell: StoredCell, revision: Int64) {
        var stored = cell
        stored.revision = revision
        cache.patch(.cells, "\(rollout)") { (cells: inout [CellKey: StoredCell]) in cells[key] = stored }
    }

    func replaceCell(rollout: Int64, _ key: CellKey, _ cell: StoredCell, existed: Bool, announce: Bool) async throws -> StoredCell? {
        let body = try json(cell)
        let rows = try await write(fenced: true, announcing: announce ? [.cells] : [], cachedHere: false) { tx in
            if existed {
                return try await tx.query(
                    """
                    UPDATE rollout_cells SET body = ?, revision = revision + 1 WHERE rollout_id = ? AND cell = ? AND revision = ? RETURNING revision
                    """, [body, rollout, key.description, cell.revision])
            }
            return try await tx.query(
                """
                INSERT INTO rollout_cells (rollout_id, cell, body) VALUES (?,?,?) ON CONFLICT(rollout_id, cell) DO NOTHING RETURNING revision
                """, [rollout, key.description, body])
        }
        guard let row = rows.first else {
            cache.invalidate(.cells)  // the copy it was read from is stale: the next read goes to the database
            return nil
        }
        let revision = try row.int("revision")
        keepWritten(rollout: rollout, key, cell, revision: revision)
        var stored = cell
        stored.revision = revision
        return stored
    }

    func recordAction(rollout: Int64, _ a: RolloutActionRecord) async throws {
        try await db.execute(
            "INSERT INTO rollout_actions (rollout_id, at, actor, action, cell, detail) VALUES (?,?,?,?,?,?)",
            [rollout, a.at, a.actor, a.action, a.cell, a.detail])
    }

    func actions(rollout: Int64) async throws -> [RolloutActionRecord] {
        try await db.query("SELECT at, actor, action, cell, detail FROM rollout_actions WHERE rollout_id = ? ORDER BY id", [rollout]).map {
            RolloutActionRecord(
                at: try $0.int("at"), actor: try $0.string("actor"), action: try $0.string("action"),
                cell: try $0.optionalString("cell"), detail: try $0.optionalString("detail"))
        }
    }

    /// From this process's copy of the latest outcome per device (see `ChangeFeed`).
    func installOutcomes(release: String) async throws -> [String: String] {
        try await cache.feeds.outcomes(release: release).snapshot(
            db, empty: { InstallOutcomeTable() },
            read: { (since: Int64?) -> [(String, String)] in
                try await db.query(
                    "SELECT device_id, kind FROM latest_install_outcomes WHERE release = ?\(since == nil ? "" : " AND rev >= ?")",
                    since.map { [release, $0] as [any SQLValueConvertible] } ?? [release]
                ).map { (try $0.string("device_id"), try $0.string("kind")) }
            }, merge: { $0.merge($1) }
        ).state.kinds
    }

    func runtimeMetrics(model: String, since: Int64) async throws -> [DeviceMetrics] {
        Array(try await latestRuntimeMetrics(model: model, since: since).values)
    }

    func latestRuntimeMetrics(model: String, since: Int64) async throws -> [String: DeviceMetrics] {
        try await cache.feeds.metrics(model: model).snapshot(
            db, empty: { RuntimeMetricsTable() },
            read: { (from: Int64?) -> [(String, DeviceMetrics?, Int64)] in
                try await db.query(
                    """
                    SELECT device_id, release, received_at, \(RuntimeMetricsColumns.list) FROM latest_runtime_metrics
                    WHERE model = ?\(from == nil ? "" : " AND rev >= ?")
                    """, from.map { [model, $0] as [any SQLValueConvertible] } ?? [model]
                ).map { (try $0.string("device_id"), try Self.metricsRow($0), try $0.int("received_at")) }
            }, merge: { $0.merge($1) }
        ).state.received(since: since)
    }

    /// The latest install event of each device for a release, from the raw events: what the
    /// latest-outcome table must always agree with (tests compare them).
    func installOutcomesScanningEvents(release: String) async throws -> [String: String] {
        var out: [String: String] = [:]
        for r in try await db.query(
            """
            SELECT e.device_id, e.kind FROM events e
            JOIN (SELECT device_id, MAX(seq) AS seq FROM events WHERE release = ? AND kind IN \(ChangeRevisions.installKindsSQL) GROUP BY device_id) latest
              ON e.device_id = latest.device_id AND e.seq = latest.seq
            """, [release])
        {
            out[try r.string("device_id")] = try r.string("kind")
        }
        return out
    }

    /// The latest runtime-metrics event of each device since `since`, from the raw events.
    func runtimeMetricsScanningEvents(model: String, since: Int64) async throws -> [DeviceMetrics] {
        try await db.query(
            """
            SELECT e.device_id, e.release, \(RuntimeMetricsColumns.list("e")) FROM events e
            JOIN (SELECT device_id, MAX(seq) AS seq FROM events WHERE model = ? AND kind = \(SQLVocabulary.literal(EventKind.metrics)) AND received_at >= ?
                  GROUP BY device_id) latest
              ON e.device_id = latest.device_id AND e.seq = latest.seq
            """, [model, since]
        ).compactMap(Self.metricsRow)
    }

    /// Fills the latest-outcome and latest-metrics tables from events loaded in bulk (seeding,
    /// benchmarks), which bypass ingest.
    func backfillLatestTelemetry() async throws {
        try await write { tx in try await ChangeRevisions.backfillLatest(tx) }
    }

    /// A metrics row (device, release, `RuntimeMetricsColumns`) as bounded figures; nil when the
    /// device sent figures that do not decode (its own fault, not the store's).
    static func metricsRow(_ r: SQLRow) throws -> DeviceMetrics? {
        guard let release = try r.optionalString("release"), let m = try RuntimeMetricsColumns.figures(r) else { return nil }
        // Figures from devices are bounded here, so one bad device cannot upset the gates' arithmetic.
        func latency(_ v: Double?) -> Double? { v.flatMap { $0.isFinite && $0 >= 0 && $0 < 86_400_000 ? $0 : nil } }
        return DeviceMetrics(
            deviceId: try r.string("device_id"), release: release, p50: latency(m.latencyP50Ms), p95: latency(m.latencyP95Ms),
            errorRate: m.errorRate.flatMap { $0.isFinite ? min(max($0, 0), 1) : nil },
            crashes: min(max(m.crashes ?? 0, 0), 1 << 40))
    }

    // MARK: assignments

    private static let assignmentColumns =
        "device_id, model, counter, release_id, variant, sha256, package_sha256, envelope, expires_at, activation"

    private static func assignmentRow(_ r: SQLRow) throws -> AssignmentRecord {
        AssignmentRecord(
            deviceId: try r.string("device_id"), model: try r.string("model"), counter: UInt64(bitPattern: try r.int("counter")),
            releaseId: try r.string("release_id"), variant: try r.string("variant"), sha256: try r.string("sha256"),
            packageSha256: try r.string("package_sha256"), envelope: try r.json(Envelope.self, "envelope"),
            expiresAt: try r.int("expires_at"), activation: try r.optionalJSON([ActivationWindow].self, "activation"))
    }

    func assignment(deviceId: String, model: String) async throws -> AssignmentRecord? {
        try await db.query("SELECT \(Self.assignmentColumns) FROM assignments WHERE device_id = ? AND model = ?", [deviceId, model])
            .first.map(Self.assignmentRow)
    }

    func assignments() async throws -> [AssignmentRecord] {
        try await db.query("SELECT \(Self.assignmentColumns) FROM assignments", []).map(Self.assignmentRow)
    }

    /// One conditional statement, so that two replicas signing for the same device cannot both
    /// win: the row is inserted only when none exists, or updated only while its counter is still
    /// the expected one.
    func replaceAssignment(_ a: AssignmentRecord, expectedCounter: UInt64?) async throws -> Bool {
        try await replaceAssignment(a, expectedCounter: expectedCounter, reaching: nil)
    }

    func replaceAssignment(_ a: AssignmentRecord, expectedCounter: UInt64?, reaching: RolloutReach?) async throws -> Bool {
        let envelope = try json(a.envelope)
        let activation = try a.activation.map(json)
        return try await write { tx -> (Bool, [StoreCache.Topic]) in
            let values: [any SQLValueConvertible] = [
                a.deviceId, a.model, a.counter, a.releaseId, a.variant, a.sha256, a.packageSha256, envelope,
                a.expiresAt, activation
            ]
            let insert = """
                INSERT INTO assignments (device_id, model, counter, release_id, variant, sha256, package_sha256, envelope, expires_at, activation)
                VALUES (?,?,?,?,?,?,?,?,?,?)
                """
            let rows: [SQLRow]
            if let expected = expectedCounter {
                rows = try await tx.query(
                    insert + """

                        ON CONFLICT(device_id, model) DO UPDATE SET counter=excluded.counter, release_id=excluded.release_id,
                          variant=excluded.variant, sha256=excluded.sha256, package_sha256=excluded.package_sha256,
                          envelope=excluded.envelope, expires_at=excluded.expires_at, activation=excluded.activation
                        WHERE assignments.counter = ? RETURNING counter
                        """, values + [expected])
            } else {
                rows = try await tx.query(insert + " ON CONFLICT(device_id, model) DO NOTHING RETURNING counter", values)
            }
            guard !rows.isEmpty else { return (false, []) }
            try await Self.recordDelivery(tx, a)
            guard let reaching else { return (true, []) }
            return (true, try await Self.recordReach(tx, reaching, deviceId: a.deviceId))
        }
    }

    /// Rows of `recordRolloutDevice`, inside a transaction; returns the topics to announce.
    static func recordReach(_ tx: any SQLQuerying, _ r: RolloutReach, deviceId: String) async throws -> [StoreCache.Topic] {
        try await tx.execute(
            """
            INSERT INTO rollout_devices (rollout_id, device_id, prior_release, prior_sha256, assigned_at) VALUES (?,?,?,?,?)
            ON CONFLICT(rollout_id, device_id) DO NOTHING
            """, [r.rollout, deviceId, r.priorRelease, r.priorSha256, r.at])
        guard let priorRelease = r.priorRelease else { return [] }
        let added = try await tx.query(
            """
            INSERT INTO rollout_prior_releases (rollout_id, release) VALUES (?,?) ON CONFLICT (rollout_id, release) DO NOTHING RETURNING release
            """, [r.rollout, priorRelease])
        return added.isEmpty ? [] : [.priors]  // announced only when a release is new to the rollout
    }

    // MARK: deltas

    func claimDelta(base: String, target: String, at: Int64) async throws -> Bool {
        !(try await db.query(
            """
            INSERT INTO deltas (base_sha256, target_sha256, status, created_at) VALUES (?,?,'building',?)
            ON CONFLICT(base_sha256, target_sha256) DO NOTHING RETURNING status
            """, [base, target, at])).isEmpty
    }

    func finishDelta(_ d: DeltaRecord) async throws {
        try await db.execute(
            """
            UPDATE deltas SET status = ?, package_sha256 = ?, package_size = ?, method = ?, detail = ?
            WHERE base_sha256 = ? AND target_sha256 = ?
            """, [d.status.rawValue, d.packageSha256, d.packageSize, d.method, d.detail, d.baseSha256, d.targetSha256])
    }

    private static func deltaRow(_ r: SQLRow) throws -> DeltaRecord {
        guard let status = DeltaRecord.Status(rawValue: try r.string("status")) else {
            throw StorageError(.corrupt, "delta with an unknown status")
        }
        return DeltaRecord(
            baseSha256: try r.string("base_sha256"), targetSha256: try r.string("target_sha256"), status: status,
            packageSha256: try r.optionalString("package_sha256"), packageSize: try r.optionalInt("package_size"),
            method: try r.optionalString("method"), detail: try r.optionalString("detail"), createdAt: try r.int("created_at"))
    }

    private static let deltaColumns = "base_sha256, target_sha256, status, package_sha256, package_size, method, detail, created_at"

    func delta(base: String, target: String) async throws -> DeltaRecord? {
        try await db.query("SELECT \(Self.deltaColumns) FROM deltas WHERE base_sha256 = ? AND target_sha256 = ?", [base, target])
            .first.map(Self.deltaRow)
    }

    func deltas(target: String) async throws -> [DeltaRecord] {
        try await db.query("SELECT \(Self.deltaColumns) FROM deltas WHERE target_sha256 = ? ORDER BY base_sha256", [target]).map(
            Self.deltaRow)
    }

    func buildingDeltas() async throws -> [(String, String)] {
        try await db.query("SELECT base_sha256, target_sha256 FROM deltas WHERE status = 'building'", []).map {
            (try $0.string("base_sha256"), try $0.string("target_sha256"))
        }
    }

    // MARK: events

    /// The whole batch in one statement (`ON CONFLICT DO NOTHING`, the stored rows returned), then
    /// only what the stored events change: the device's status from its latest install event,
    /// what it runs from its commits, and its final failures.
    func appendEvents(deviceId: String, _ events: [StatusEvent], receivedAt: Int64) async throws -> EventIngest {
        let dialect = db.dialect
        return try await write { tx in
            var storedSeqs = Set<UInt64>()
            if !events.isEmpty {
                var params: [any SQLValueConvertible] = []
                params.reserveCapacity(events.count * 17)
                for e in events {
                    params +=
                        [deviceId, e.seq, e.time, e.kind.rawValue, e.model, e.sha256, e.release, e.detail, receivedAt, e.fault, e.retryAt]
                        as [any SQLValueConvertible]
                    params += RuntimeMetricsColumns.values(e.runtimeMetrics)
                }
                let rows = Array(repeating: "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", count: events.count).joined(separator: ",")
                for r in try await tx.query(
                    """
                    INSERT INTO events (device_id, seq, time, kind, model, sha256, release, detail, received_at, fault, retry_at,
                      \(RuntimeMetricsColumns.list))
                    VALUES \(rows) ON CONFLICT(device_id, seq) DO NOTHING RETURNING seq
                    """, params)
                {
                    storedSeqs.insert(UInt64(bitPattern: try r.int("seq")))
                }
            }
            // A batch may repeat a seq: only its first copy is the stored one.
            var seen = Set<UInt64>()
            let stored = events.filter { storedSeqs.contains($0.seq) && seen.insert($0.seq).inserted }
            for e in stored { try await Self.recordFailure(tx, deviceId: deviceId, e, receivedAt: receivedAt) }
            try await ChangeRevisions.ingest(tx, deviceId: deviceId, stored: stored, receivedAt: receivedAt)
            if let last = stored.last(where: { DeviceStatus(after: $0.kind) != nil }), let status = DeviceStatus(after: last.kind) {
                try await tx.execute(
                    "UPDATE devices SET status = ?, status_detail = ? WHERE id = ?", [status.rawValue, last.detail, deviceId])
            }
            // What the device runs is known from its commit, before its next check-in says so.
            for e in stored where e.kind == .committed {
                guard let model = e.model, let sha = e.sha256, Name.isValid(model), Digest.isSHA256Hex(sha) else { continue }
                try await tx.execute("UPDATE devices SET installed = \(dialect.jsonSet("installed")) WHERE id = ?", [model, sha, deviceId])
            }
            let acked = UInt64(
                bitPattern: try await tx.scalar("SELECT COALESCE(MAX(seq), 0) AS seq FROM events WHERE device_id = ?", [deviceId]).int ?? 0)
            return EventIngest(stored: stored.count, duplicates: events.count - stored.count, ackedThrough: acked)
        }
    }

    /// The rollout states still in force, as an SQL list.
    private static let inForceSQL = SQLVocabulary.list(RolloutState.allCases.filter(\.inForce))

    private static let eventColumns = "seq, time, kind, model, sha256, release, detail, fault, retry_at, \(RuntimeMetricsColumns.list)"

    func events(deviceId: String, limit: Int) async throws -> [StatusEvent] {
        try await db.query("SELECT \(Self.eventColumns) FROM events WHERE device_id = ? ORDER BY seq DESC LIMIT ?", [deviceId, limit])
            .map(Self.eventRow)
    }

    func events(deviceId: String, after seq: UInt64, limit: Int) async throws -> [StatusEvent] {
        try await db.query(
            "SELECT \(Self.eventColumns) FROM events WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            [deviceId, Int64(clamping: seq), limit]
        ).map(Self.eventRow)
    }

    private static func eventRow(_ r: SQLRow) throws -> StatusEvent {
        StatusEvent(
            seq: UInt64(bitPattern: try r.int("seq")), time: try r.int("time"), kind: EventKind(rawValue: try r.string("kind")),
            model: try r.optionalString("model"), sha256: try r.optionalString("sha256"), release: try r.optionalString("release"),
            detail: try r.optionalString("detail"), fault: try r.optionalString("fault"), retryAt: try r.optionalInt("retry_at"),
            metrics: try RuntimeMetricsColumns.figures(r))
    }

    // MARK: meta

    func meta(_ key: String) async throws -> String? {
        try await db.query("SELECT value FROM meta WHERE key = ?", [key]).first.map { try $0.string("value") }
    }

    func setMeta(_ key: String, _ value: String) async throws {
        try await db.execute(
            "INSERT INTO meta (key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value])
    }
}

extension SQLStore {
    /// Bulk load for seeding and benchmarks: `rows` in multi-row INSERTs of a few hundred rows,
    /// committed every `perTransaction` rows. `constants` are SQL literals for the other columns.
    func insertRows(
        table: String, columns: [String], constants: [String: String] = [:], rows: [[any SQLValueConvertible]],
        perStatement: Int = 400, perTransaction: Int = 20_000
    ) async throws {
        let names = (columns + constants.keys.sorted()).joined(separator: ", ")
        let literals = constants.keys.sorted().map { constants[$0]! }
        let tuple = "(" + (Array(repeating: "?", count: columns.count) + literals).joined(separator: ",") + ")"
        var start = 0
        while start < rows.count {
            let chunk: [[SQLValue]] = rows[start..<min(start + perTransaction, rows.count)].map { $0.map(\.sqlValue) }
            try await write { tx in
                var i = 0
                while i < chunk.count {
                    let part = chunk[i..<min(i + perStatement, chunk.count)]
                    let sql =
                        "INSERT INTO \(table) (\(names)) VALUES " + Array(repeating: tuple, count: part.count).joined(separator: ",")
                        + " ON CONFLICT DO NOTHING"
                    try await tx.execute(sql, part.flatMap { $0 })
                    i += perStatement
                }
            }
            start += perTransaction
        }
    }
}

extension Dictionary {
    /// nil for an empty dictionary (an optional field left out of JSON).
    var nilIfEmpty: Self? { isEmpty ? nil : self }
}

extension Array {
    /// Consecutive slices of at most `size` elements (one statement each).
    func chunks(of size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
