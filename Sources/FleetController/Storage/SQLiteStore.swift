import FleetCore
import Foundation

/// The default store: one SQLite file under the data directory.
final class SQLiteStore: FleetStore {
    let db: SQLiteDatabase

    init(path: String) throws {
        db = try SQLiteDatabase(path: path)
        try migrate()
        try migrateTelemetry()
        try migrateAccess()
        try migrateReports()
        try migrateFailures()
        try migrateTrials()
    }

    private func migrate() throws {
        try db.transaction {
            try db.execute("""
                CREATE TABLE IF NOT EXISTS devices (
                    id TEXT PRIMARY KEY, facts TEXT NOT NULL, hardware_class TEXT, tier TEXT,
                    installed TEXT NOT NULL, phase TEXT, status TEXT NOT NULL, status_detail TEXT,
                    held TEXT NOT NULL, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, agent_version TEXT)
                """)
            try db.execute("CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, min_quality REAL, created_at INTEGER NOT NULL)")
            try db.execute("""
                CREATE TABLE IF NOT EXISTS variants (
                    model TEXT NOT NULL REFERENCES models(name), name TEXT NOT NULL, body TEXT NOT NULL,
                    quality REAL, created_at INTEGER NOT NULL, PRIMARY KEY (model, name))
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS releases (
                    id TEXT PRIMARY KEY, model TEXT NOT NULL REFERENCES models(name), version TEXT NOT NULL,
                    serial INTEGER NOT NULL, envelope TEXT NOT NULL, catalog_sha256 TEXT NOT NULL,
                    created_at INTEGER NOT NULL, UNIQUE (model, serial))
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS rollouts (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, release_id TEXT NOT NULL REFERENCES releases(id),
                    model TEXT NOT NULL, strategy TEXT NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL,
                    policy TEXT, previous_release TEXT, created_by TEXT NOT NULL)
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS rollout_cells (
                    rollout_id INTEGER NOT NULL REFERENCES rollouts(id), cell TEXT NOT NULL, body TEXT NOT NULL,
                    PRIMARY KEY (rollout_id, cell))
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS rollout_actions (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id INTEGER NOT NULL, at INTEGER NOT NULL,
                    actor TEXT NOT NULL, action TEXT NOT NULL, cell TEXT, detail TEXT)
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS assignments (
                    device_id TEXT NOT NULL, model TEXT NOT NULL, counter INTEGER NOT NULL, release_id TEXT NOT NULL,
                    variant TEXT NOT NULL, sha256 TEXT NOT NULL, package_sha256 TEXT NOT NULL, envelope TEXT NOT NULL,
                    expires_at INTEGER NOT NULL, PRIMARY KEY (device_id, model))
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS deltas (
                    base_sha256 TEXT NOT NULL, target_sha256 TEXT NOT NULL, status TEXT NOT NULL, package_sha256 TEXT,
                    package_size INTEGER, method TEXT, detail TEXT, created_at INTEGER NOT NULL,
                    PRIMARY KEY (base_sha256, target_sha256))
                """)
            try db.execute("""
                CREATE TABLE IF NOT EXISTS events (
                    device_id TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL, kind TEXT NOT NULL,
                    model TEXT, sha256 TEXT, release TEXT, detail TEXT, received_at INTEGER NOT NULL,
                    PRIMARY KEY (device_id, seq))
                """)
            try db.execute("CREATE INDEX IF NOT EXISTS events_release ON events (release, kind)")
            try db.execute("CREATE INDEX IF NOT EXISTS events_model ON events (model, kind, time)")
            try db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        }
    }

    // MARK: coding helpers

    func json<T: Encodable>(_ v: T) throws -> String { String(decoding: try FleetJSON.encode(v), as: UTF8.self) }
    func parse<T: Decodable>(_ t: T.Type, _ s: SQLValue) throws -> T {
        guard let text = s.text else { throw StorageError(.corrupt, "expected JSON text for \(T.self)") }
        do { return try JSONDecoder().decode(t, from: Data(text.utf8)) } catch {
            throw StorageError(.corrupt, "stored \(T.self) does not decode: \(error)")
        }
    }

    // MARK: devices

    func upsertDevice(_ d: DeviceRecord) async throws {
        // A check-in's facts and time are repeated by the next check-in: not worth an fsync each.
        try db.executeRelaxed("""
            INSERT INTO devices (id, facts, hardware_class, tier, installed, phase, status, status_detail, held, first_seen, last_seen, agent_version)
            VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
            ON CONFLICT(id) DO UPDATE SET facts=excluded.facts, hardware_class=excluded.hardware_class, tier=excluded.tier,
              installed=excluded.installed, phase=excluded.phase, held=excluded.held, last_seen=excluded.last_seen,
              agent_version=excluded.agent_version
            """, [d.id, try json(d.facts), d.hardwareClass, d.tier, try json(d.installed), d.phase, d.status, d.statusDetail,
                  try json(d.held), d.firstSeen, d.lastSeen, d.agentVersion])
    }

    private func deviceRow(_ r: [SQLValue]) throws -> DeviceRecord {
        DeviceRecord(id: r[0].text ?? "", facts: try parse(DeviceFacts.self, r[1]), hardwareClass: r[2].text, tier: r[3].text,
                     installed: try parse([String: String].self, r[4]), phase: r[5].text, status: r[6].text ?? "idle",
                     statusDetail: r[7].text, held: try parse([String: String].self, r[8]), firstSeen: r[9].int ?? 0,
                     lastSeen: r[10].int ?? 0, agentVersion: r[11].text)
    }

    private let deviceColumns = "id, facts, hardware_class, tier, installed, phase, status, status_detail, held, first_seen, last_seen, agent_version"

    func device(_ id: String) async throws -> DeviceRecord? {
        try db.query("SELECT \(deviceColumns) FROM devices WHERE id = ?", [id]).first.map(deviceRow)
    }

    func devices() async throws -> [DeviceRecord] {
        try db.query("SELECT \(deviceColumns) FROM devices ORDER BY id").map(deviceRow)
    }

    // MARK: models and variants

    func createModel(_ m: ModelRecord) async throws {
        do {
            try db.execute("INSERT INTO models (name, min_quality, created_at) VALUES (?,?,?)", [m.name, m.minQuality, m.createdAt])
        } catch let e as StorageError where e.code == .conflict {
            throw StorageError(.conflict, "model \(m.name) already exists")
        }
    }

    func model(_ name: String) async throws -> ModelRecord? {
        try db.query("SELECT name, min_quality, created_at FROM models WHERE name = ?", [name]).first.map {
            ModelRecord(name: $0[0].text ?? "", minQuality: $0[1].real, createdAt: $0[2].int ?? 0)
        }
    }

    func models() async throws -> [ModelRecord] {
        try db.query("SELECT name, min_quality, created_at FROM models ORDER BY name").map {
            ModelRecord(name: $0[0].text ?? "", minQuality: $0[1].real, createdAt: $0[2].int ?? 0)
        }
    }

    func addVariant(_ v: VariantRecord) async throws {
        do {
            try db.execute("INSERT INTO variants (model, name, body, quality, created_at) VALUES (?,?,?,?,?)",
                           [v.model, v.variant.name, try json(v.variant), v.quality, v.createdAt])
        } catch let e as StorageError where e.code == .conflict {
            throw StorageError(.conflict, "variant \(v.variant.name) of \(v.model) already exists")
        }
    }

    func variants(model: String) async throws -> [VariantRecord] {
        try db.query("SELECT model, body, quality, created_at FROM variants WHERE model = ? ORDER BY name", [model]).map {
            VariantRecord(model: $0[0].text ?? "", variant: try parse(CatalogVariant.self, $0[1]), quality: $0[2].real, createdAt: $0[3].int ?? 0)
        }
    }

    // MARK: releases and rollouts

    func createRelease(_ r: ReleaseRecord) async throws {
        do {
            try db.execute("INSERT INTO releases (id, model, version, serial, envelope, catalog_sha256, created_at) VALUES (?,?,?,?,?,?,?)",
                           [r.id, r.model, r.version, r.serial, try json(r.catalogEnvelope), r.catalogSha256, r.createdAt])
        } catch let e as StorageError where e.code == .conflict {
            throw StorageError(.conflict, "release \(r.id) or serial \(r.serial) of \(r.model) already exists")
        }
    }

    private func releaseRow(_ r: [SQLValue]) throws -> ReleaseRecord {
        let env = try parse(Envelope.self, r[4])
        guard let body = env.payloadBytes, let catalog = try? JSONDecoder().decode(ReleaseCatalog.self, from: Data(body)) else {
            throw StorageError(.corrupt, "stored catalog of \(r[0].text ?? "?") does not decode")
        }
        return ReleaseRecord(id: r[0].text ?? "", model: r[1].text ?? "", version: r[2].text ?? "", serial: Int(r[3].int ?? 0),
                             catalogEnvelope: env, catalogSha256: r[5].text ?? "", catalog: catalog, createdAt: r[6].int ?? 0)
    }

    func release(_ id: String) async throws -> ReleaseRecord? {
        try db.query("SELECT id, model, version, serial, envelope, catalog_sha256, created_at FROM releases WHERE id = ?", [id]).first.map(releaseRow)
    }

    func releases() async throws -> [ReleaseRecord] {
        try db.query("SELECT id, model, version, serial, envelope, catalog_sha256, created_at FROM releases ORDER BY model, serial").map(releaseRow)
    }

    func maxSerial(model: String) async throws -> Int {
        Int(try db.query("SELECT COALESCE(MAX(serial), 0) FROM releases WHERE model = ?", [model]).first?[0].int ?? 0)
    }

    private let rolloutColumns = "id, release_id, model, strategy, state, created_at, policy, previous_release, created_by"

    private func rolloutRow(_ r: [SQLValue]) throws -> RolloutRecord {
        RolloutRecord(id: r[0].int ?? 0, releaseId: r[1].text ?? "", model: r[2].text ?? "", strategy: r[3].text ?? "",
                      state: r[4].text ?? "", createdAt: r[5].int ?? 0,
                      policy: r[6] == .null ? nil : try parse(RolloutPolicy.self, r[6]), previousReleaseId: r[7].text,
                      createdBy: r[8].text ?? "operator")
    }

    func createRollout(_ r: RolloutRecord) async throws -> RolloutRecord {
        try db.transaction {
            try db.execute("UPDATE rollouts SET state = 'superseded' WHERE model = ? AND state IN ('active', 'completed', 'aborted')", [r.model])
            let rows = try db.query("""
                INSERT INTO rollouts (release_id, model, strategy, state, created_at, policy, previous_release, created_by)
                VALUES (?,?,?,'active',?,?,?,?) RETURNING \(rolloutColumns)
                """, [r.releaseId, r.model, r.strategy, r.createdAt, try r.policy.map(json), r.previousReleaseId, r.createdBy])
            guard let row = rows.first else { throw StorageError(.sqlite, "insert returned no row") }
            return try rolloutRow(row)
        }
    }

    func rollout(_ id: Int64) async throws -> RolloutRecord? {
        try db.query("SELECT \(rolloutColumns) FROM rollouts WHERE id = ?", [id]).first.map(rolloutRow)
    }

    func rollouts() async throws -> [RolloutRecord] {
        try db.query("SELECT \(rolloutColumns) FROM rollouts ORDER BY id").map(rolloutRow)
    }

    func activeRollouts() async throws -> [RolloutRecord] {
        try db.query("SELECT \(rolloutColumns) FROM rollouts WHERE state IN ('active', 'completed', 'aborted') ORDER BY id").map(rolloutRow)
    }

    func setRolloutState(_ id: Int64, _ state: String) async throws {
        try db.execute("UPDATE rollouts SET state = ? WHERE id = ?", [state, id])
    }

    func cells(rollout: Int64) async throws -> [CellKey: StoredCell] {
        var out: [CellKey: StoredCell] = [:]
        for r in try db.query("SELECT cell, body FROM rollout_cells WHERE rollout_id = ?", [rollout]) {
            let parts = (r[0].text ?? "").split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            out[CellKey(hardwareClass: parts[0], tier: parts[1])] = try parse(StoredCell.self, r[1])
        }
        return out
    }

    func saveCell(rollout: Int64, _ key: CellKey, _ cell: StoredCell) async throws {
        try db.execute("INSERT INTO rollout_cells (rollout_id, cell, body) VALUES (?,?,?) ON CONFLICT(rollout_id, cell) DO UPDATE SET body = excluded.body",
                       [rollout, key.description, try json(cell)])
    }

    func recordAction(rollout: Int64, _ a: RolloutActionRecord) async throws {
        try db.execute("INSERT INTO rollout_actions (rollout_id, at, actor, action, cell, detail) VALUES (?,?,?,?,?,?)",
                       [rollout, a.at, a.actor, a.action, a.cell, a.detail])
    }

    func actions(rollout: Int64) async throws -> [RolloutActionRecord] {
        try db.query("SELECT at, actor, action, cell, detail FROM rollout_actions WHERE rollout_id = ? ORDER BY id", [rollout]).map {
            RolloutActionRecord(at: $0[0].int ?? 0, actor: $0[1].text ?? "", action: $0[2].text ?? "", cell: $0[3].text, detail: $0[4].text)
        }
    }

    func installOutcomes(release: String) async throws -> [String: String] {
        var out: [String: String] = [:]
        let kinds = "('started','downloaded','verified','activated','committed','failed','rolled-back')"
        for r in try db.query("""
            SELECT e.device_id, e.kind FROM events e
            JOIN (SELECT device_id, MAX(seq) AS seq FROM events WHERE release = ? AND kind IN \(kinds) GROUP BY device_id) last
              ON e.device_id = last.device_id AND e.seq = last.seq
            """, [release]) {
            out[r[0].text ?? ""] = r[1].text
        }
        return out
    }

    func runtimeMetrics(model: String, since: Int64) async throws -> [DeviceMetrics] {
        try db.query("""
            SELECT e.device_id, e.release, e.detail FROM events e
            JOIN (SELECT device_id, MAX(seq) AS seq FROM events WHERE model = ? AND kind = 'metrics' AND received_at >= ? GROUP BY device_id) last
              ON e.device_id = last.device_id AND e.seq = last.seq
            """, [model, since]).compactMap(Self.metricsRow)
    }

    /// A metrics event row (device, release, detail) as bounded figures.
    static func metricsRow(_ r: [SQLValue]) -> DeviceMetrics? {
        guard let release = r[1].text, let detail = r[2].text,
              let m = try? JSONDecoder().decode(RuntimeMetrics.self, from: Data(detail.utf8)) else { return nil }
        // Figures from devices are bounded here, so one bad device cannot upset the gates' arithmetic.
        func latency(_ v: Double?) -> Double? { v.flatMap { $0.isFinite && $0 >= 0 && $0 < 86_400_000 ? $0 : nil } }
        return DeviceMetrics(deviceId: r[0].text ?? "", release: release, p50: latency(m.latencyP50Ms), p95: latency(m.latencyP95Ms),
                             errorRate: m.errorRate.flatMap { $0.isFinite ? min(max($0, 0), 1) : nil },
                             crashes: min(max(m.crashes ?? 0, 0), 1 << 40))
    }

    // MARK: assignments

    private func assignmentRow(_ r: [SQLValue]) throws -> AssignmentRecord {
        AssignmentRecord(deviceId: r[0].text ?? "", model: r[1].text ?? "", counter: UInt64(bitPattern: r[2].int ?? 0),
                         releaseId: r[3].text ?? "", variant: r[4].text ?? "", sha256: r[5].text ?? "",
                         packageSha256: r[6].text ?? "", envelope: try parse(Envelope.self, r[7]), expiresAt: r[8].int ?? 0)
    }

    func assignment(deviceId: String, model: String) async throws -> AssignmentRecord? {
        try db.query("SELECT device_id, model, counter, release_id, variant, sha256, package_sha256, envelope, expires_at FROM assignments WHERE device_id = ? AND model = ?",
                     [deviceId, model]).first.map(assignmentRow)
    }

    func assignments() async throws -> [AssignmentRecord] {
        try db.query("SELECT device_id, model, counter, release_id, variant, sha256, package_sha256, envelope, expires_at FROM assignments").map(assignmentRow)
    }

    func replaceAssignment(_ a: AssignmentRecord, expectedCounter: UInt64?) async throws -> Bool {
        try db.transaction {
            let current = try db.query("SELECT counter FROM assignments WHERE device_id = ? AND model = ?", [a.deviceId, a.model])
                .first.map { UInt64(bitPattern: $0[0].int ?? 0) }
            guard current == expectedCounter else { return false }
            try db.execute("""
                INSERT INTO assignments (device_id, model, counter, release_id, variant, sha256, package_sha256, envelope, expires_at)
                VALUES (?,?,?,?,?,?,?,?,?)
                ON CONFLICT(device_id, model) DO UPDATE SET counter=excluded.counter, release_id=excluded.release_id,
                  variant=excluded.variant, sha256=excluded.sha256, package_sha256=excluded.package_sha256,
                  envelope=excluded.envelope, expires_at=excluded.expires_at
                """, [a.deviceId, a.model, a.counter, a.releaseId, a.variant, a.sha256, a.packageSha256, try json(a.envelope), a.expiresAt])
            try recordDeliveryLocked(a)
            return true
        }
    }

    // MARK: deltas

    func claimDelta(base: String, target: String, at: Int64) async throws -> Bool {
        try db.transaction {
            try db.execute("INSERT OR IGNORE INTO deltas (base_sha256, target_sha256, status, created_at) VALUES (?,?,'building',?)",
                           [base, target, at])
            return db.changes == 1
        }
    }

    func finishDelta(_ d: DeltaRecord) async throws {
        try db.execute("""
            UPDATE deltas SET status = ?, package_sha256 = ?, package_size = ?, method = ?, detail = ?
            WHERE base_sha256 = ? AND target_sha256 = ?
            """, [d.status.rawValue, d.packageSha256, d.packageSize, d.method, d.detail, d.baseSha256, d.targetSha256])
    }

    private func deltaRow(_ r: [SQLValue]) -> DeltaRecord {
        DeltaRecord(baseSha256: r[0].text ?? "", targetSha256: r[1].text ?? "", status: DeltaRecord.Status(rawValue: r[2].text ?? "") ?? .failed,
                    packageSha256: r[3].text, packageSize: r[4].int, method: r[5].text, detail: r[6].text, createdAt: r[7].int ?? 0)
    }

    private let deltaColumns = "base_sha256, target_sha256, status, package_sha256, package_size, method, detail, created_at"

    func delta(base: String, target: String) async throws -> DeltaRecord? {
        try db.query("SELECT \(deltaColumns) FROM deltas WHERE base_sha256 = ? AND target_sha256 = ?", [base, target]).first.map(deltaRow)
    }

    func deltas(target: String) async throws -> [DeltaRecord] {
        try db.query("SELECT \(deltaColumns) FROM deltas WHERE target_sha256 = ? ORDER BY base_sha256", [target]).map(deltaRow)
    }

    func buildingDeltas() async throws -> [(String, String)] {
        try db.query("SELECT base_sha256, target_sha256 FROM deltas WHERE status = 'building'").map { ($0[0].text ?? "", $0[1].text ?? "") }
    }

    // MARK: events

    func appendEvents(deviceId: String, _ events: [StatusEvent], receivedAt: Int64) async throws -> EventIngest {
        try db.transaction {
            var stored = 0, duplicates = 0
            for e in events {
                try db.execute("""
                    INSERT OR IGNORE INTO events (device_id, seq, time, kind, model, sha256, release, detail, received_at, fault, retry_at)
                    VALUES (?,?,?,?,?,?,?,?,?,?,?)
                    """, [deviceId, e.seq, e.time, e.kind, e.model, e.sha256, e.release, e.detail, receivedAt, e.fault, e.retryAt])
                if db.changes == 1 {
                    stored += 1
                    try recordFailureLocked(deviceId: deviceId, e, receivedAt: receivedAt)
                    if let status = DeviceStatus.from(eventKind: e.kind) {
                        try db.execute("UPDATE devices SET status = ?, status_detail = ? WHERE id = ?", [status, e.detail, deviceId])
                    }
                    // What the device runs is known from its commit, before its next check-in says so.
                    if e.kind == "committed", let model = e.model, let sha = e.sha256, Name.isValid(model), Digest.isSHA256Hex(sha) {
                        try db.execute("UPDATE devices SET installed = json_set(installed, '$.\"' || ? || '\"', ?) WHERE id = ?", [model, sha, deviceId])
                    }
                } else {
                    duplicates += 1
                }
            }
            let acked = UInt64(bitPattern: try db.query("SELECT COALESCE(MAX(seq), 0) FROM events WHERE device_id = ?", [deviceId]).first?[0].int ?? 0)
            return EventIngest(stored: stored, duplicates: duplicates, ackedThrough: acked)
        }
    }

    func events(deviceId: String, limit: Int) async throws -> [StatusEvent] {
        try db.query("SELECT seq, time, kind, model, sha256, release, detail, fault, retry_at FROM events WHERE device_id = ? ORDER BY seq DESC LIMIT ?",
                     [deviceId, limit]).map(Self.eventRow)
    }

    func events(deviceId: String, after seq: UInt64, limit: Int) async throws -> [StatusEvent] {
        try db.query("SELECT seq, time, kind, model, sha256, release, detail, fault, retry_at FROM events WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                     [deviceId, Int64(clamping: seq), limit]).map(Self.eventRow)
    }

    private static func eventRow(_ r: [SQLValue]) -> StatusEvent {
        StatusEvent(seq: UInt64(bitPattern: r[0].int ?? 0), time: r[1].int ?? 0, kind: r[2].text ?? "",
                    model: r[3].text, sha256: r[4].text, release: r[5].text, detail: r[6].text, fault: r[7].text, retryAt: r[8].int)
    }

    // MARK: meta

    func meta(_ key: String) async throws -> String? {
        try db.query("SELECT value FROM meta WHERE key = ?", [key]).first?[0].text
    }

    func setMeta(_ key: String, _ value: String) async throws {
        try db.execute("INSERT INTO meta (key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value])
    }
}

/// The device status shown to operators, from the kind of its latest install event.
enum DeviceStatus {
    static func from(eventKind: String) -> String? {
        switch eventKind {
        case "started", "downloaded", "verified", "activated": return "installing"
        case "committed": return "committed"
        case "failed": return "failed"
        case "rolled-back": return "rolled-back"
        case "rejected": return "rejected"
        case "retrying": return "retrying"
        default: return nil
        }
    }
}
