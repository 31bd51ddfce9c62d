import FleetCore

extension StatusEvent {
    /// An event as a device puts it on the wire: the kind as its raw string (an unknown one becomes
    /// `.other`, as the controller decodes it). The tests' simulated devices and event tables speak
    /// in wire strings; production code passes `EventKind`.
    init(
        seq: UInt64, time: Int64, kind wire: String, model: String? = nil, sha256: String? = nil, release: String? = nil,
        detail: String? = nil, fault: String? = nil, retryAt: Int64? = nil, metrics: RuntimeMetrics? = nil
    ) {
        self.init(
            seq: seq, time: time, kind: EventKind(rawValue: wire), model: model, sha256: sha256, release: release, detail: detail,
            fault: fault, retryAt: retryAt, metrics: metrics)
    }
}
