import FleetCore
import Foundation

/// Which rollout of a model a device follows, in which wave, and when it may activate.
///
/// Several rollouts of one model can be in force at once on different selectors. A device follows
/// the newest one whose selector picks it and (with waves) one of whose waves picks it; a device
/// none picks keeps what it runs. The Director (at check-in) and the rollout driver (forming cells)
/// both decide through here, so they always agree.
enum Targeting {
    struct Choice: Equatable {
        var rollout: RolloutRecord
        var wave: Int
        var cell: CellKey
    }

    /// The in-force rollouts grouped by model, newest first.
    static func byModel(_ rollouts: [RolloutRecord]) -> [String: [RolloutRecord]] {
        var out: [String: [RolloutRecord]] = [:]
        for r in rollouts.sorted(by: { $0.id > $1.id }) { out[r.model, default: []].append(r) }
        return out
    }

    /// The rollout (of those given, newest first, one model) a device with these selectable labels
    /// follows, and its wave.
    static func choose(_ selectable: [String: String], among newestFirst: [RolloutRecord]) -> (RolloutRecord, Int)? {
        for r in newestFirst where r.selector.matches(selectable) {
            guard let policy = r.policy else { return (r, 0) }
            if let wave = policy.wave(for: selectable) { return (r, wave) }
        }
        return nil
    }

    static func cell(hardwareClass: String?, tier: String?, rollout: RolloutRecord, wave: Int) -> CellKey {
        CellKey(hardwareClass: hardwareClass ?? "none", tier: tier ?? "none", wave: rollout.policy?.waveName(wave))
    }

    static func choice(for device: DeviceRecord, among newestFirst: [RolloutRecord]) -> Choice? {
        let labels = device.selectable
        guard let (r, wave) = choose(labels, among: newestFirst) else { return nil }
        return Choice(rollout: r, wave: wave, cell: cell(hardwareClass: device.hardwareClass, tier: device.tier, rollout: r, wave: wave))
    }

    /// Every device a rollout takes, by cell: the members the driver forms cohorts from.
    static func members(of rollout: RolloutRecord, devices: [DeviceCellRecord], inForce: [RolloutRecord]) -> [CellKey: [DeviceCellRecord]] {
        let rivals = inForce.filter { $0.model == rollout.model && $0.id != rollout.id && $0.state.inForce }
            .sorted { $0.id > $1.id }
        let newer = rivals.filter { $0.id > rollout.id }
        var out: [CellKey: [DeviceCellRecord]] = [:]
        for d in devices {
            // The common case (a device the selector does not pick) builds nothing.
            guard rollout.selector.matches(d.labels, hardwareClass: d.hardwareClass, tier: d.tier, arch: d.arch) else { continue }
            let labels = d.selectable
            // A newer rollout that picks the device takes it.
            if !newer.isEmpty, choose(labels, among: newer) != nil { continue }
            guard let wave = rollout.policy.map({ $0.wave(for: labels) }) ?? 0 else { continue }
            out[cell(hardwareClass: d.hardwareClass, tier: d.tier, rollout: rollout, wave: wave), default: []].append(d)
        }
        return out
    }

    // MARK: maintenance windows

    /// The window a device of this rollout and wave activates in: the rollout's own, else its
    /// wave's (or the policy's), else the first of the fleet's windows whose selector picks it.
    static func window(rollout: RolloutRecord, wave: Int, selectable: [String: String], fleet: [FleetConfig.WindowRule])
        -> MaintenanceWindow?
    {
        if let w = rollout.window { return w }
        if let w = rollout.policy?.forWave(wave).window { return w }
        return fleet.first { $0.selector.matches(selectable) }?.window
    }

    /// How many occurrences an assignment carries: a week of daily windows, and more than the
    /// assignment's life of weekly ones.
    static let occurrencesSigned = 8

    /// The UTC intervals a device may activate in, from `now`.
    static func activation(_ window: MaintenanceWindow?, timezoneLabel: String?, configured: String?, now: Int64) -> [ActivationWindow]? {
        guard let window else { return nil }
        let (zone, _) = WindowCalendar.zone(for: window, label: timezoneLabel, configured: configured)
        return WindowCalendar.occurrences(of: window, in: zone, after: now, count: occurrencesSigned)
    }
}
