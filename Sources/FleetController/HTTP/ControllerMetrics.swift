import FleetCore
import Prometheus

/// The controller's Prometheus metrics, from an injected registry (no global bootstrap).
struct ControllerMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let checkIns: Prometheus.Counter
    let assignmentsSigned: Prometheus.Counter
    let eventsStored: Prometheus.Counter
    let eventsDuplicate: Prometheus.Counter
    let artifactBytesServed: Prometheus.Counter
    let artifactsUploaded: Prometheus.Counter
    let devices: Prometheus.Gauge
    let artifactRequests: Prometheus.Counter
    let rolloutTicks: Prometheus.Counter
    let gateFailures: Prometheus.Counter
    let artifactsQuarantined: Prometheus.Gauge
    let artifactsVerified: Prometheus.Counter
    let artifactScrubs: Prometheus.Counter
    let artifactScrubBytes: Prometheus.Counter
    let artifactLastScrub: Prometheus.Gauge

    init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        checkIns = registry.makeCounter(name: "edgefleet_checkins_total", help: "Device check-ins handled")
        assignmentsSigned = registry.makeCounter(
            name: "edgefleet_assignments_signed_total", help: "Per-device assignments signed by the director key")
        eventsStored = registry.makeCounter(name: "edgefleet_events_stored_total", help: "Device status events stored")
        eventsDuplicate = registry.makeCounter(
            name: "edgefleet_events_duplicate_total", help: "Device status events received again and ignored")
        artifactBytesServed = registry.makeCounter(
            name: "edgefleet_artifact_bytes_served_total",
            help: "Artifact bytes written to clients' connections (a cut download counts what was sent)")
        artifactsUploaded = registry.makeCounter(name: "edgefleet_artifacts_uploaded_total", help: "Artifacts uploaded")
        devices = registry.makeGauge(name: "edgefleet_devices", help: "Devices known to the controller")
        artifactRequests = registry.makeCounter(
            name: "edgefleet_artifact_downloads_total", help: "Artifact GET requests answered with content")
        rolloutTicks = registry.makeCounter(name: "edgefleet_rollout_evaluations_total", help: "Gate evaluations of staged rollouts")
        gateFailures = registry.makeCounter(name: "edgefleet_gate_failures_total", help: "Cells stopped by a failing gate")
        artifactsQuarantined = registry.makeGauge(
            name: "edgefleet_artifacts_quarantined",
            help: "Stored artifacts found corrupt and taken out of service")
        artifactsVerified = registry.makeCounter(
            name: "edgefleet_artifact_verifications_total",
            help: "Stored artifacts hashed again (by the scrub and before delta builds)")
        artifactScrubs = registry.makeCounter(name: "edgefleet_artifact_scrubs_total", help: "Scrub passes over the artifact store")
        artifactScrubBytes = registry.makeCounter(
            name: "edgefleet_artifact_scrub_bytes_total", help: "Artifact bytes hashed again by scrub passes")
        artifactLastScrub = registry.makeGauge(
            name: "edgefleet_artifact_scrub_last_timestamp_seconds",
            help: "When the last scrub pass finished (controller clock, Unix seconds)")
    }

    /// A staged rollout's cell as gauges: its phase, its status (1 for the current one), its
    /// devices by outcome, and each gate's observed value, threshold and verdict
    /// (1 passing, 0 failing, -1 not enough data).
    func recordCell(rollout: Int64, release: String, cell: CellKey, state: CellState, observation: CellObservation) {
        let base = [("rollout", "\(rollout)"), ("release", release), ("hardware_class", cell.hardwareClass), ("tier", cell.tier)]
        registry.makeGauge(name: "edgefleet_cell_phase", labels: base, help: "Current phase of a rollout cell (1-based)").set(
            Int64(state.phase + 1))
        for status in CellState.Status.allCases {
            registry.makeGauge(
                name: "edgefleet_cell_status", labels: base + [("status", status.rawValue)], help: "1 for the cell's current status"
            ).set(Int64(state.status == status ? 1 : 0))
        }
        for (outcome, n) in [
            ("targeted", observation.targeted), ("committed", observation.committed), ("install_failed", observation.installFailed),
            ("health_failed", observation.healthFailed), ("timed_out", observation.timedOut)
        ] {
            registry.makeGauge(
                name: "edgefleet_cell_devices", labels: base + [("outcome", outcome)],
                help: "Devices of the cell's current cohort by outcome"
            )
            .set(Int64(n))
        }
        for g in state.gates {
            let labels = base + [("gate", g.metric)]
            registry.makeGauge(name: "edgefleet_gate_threshold", labels: labels, help: "A gate's threshold").set(g.threshold)
            if let o = g.observed {
                registry.makeGauge(name: "edgefleet_gate_observed", labels: labels, help: "A gate's observed value").set(o)
            }
            registry.makeGauge(name: "edgefleet_gate_passing", labels: labels, help: "1 passing, 0 failing, -1 not enough data")
                .set(Int64(g.passed.map { $0 ? 1 : 0 } ?? -1))
        }
    }

    func recordRollouts(_ rollouts: [RolloutRecord]) {
        var counts = Dictionary(uniqueKeysWithValues: RolloutState.allCases.map { ($0, Int64(0)) })
        for r in rollouts { counts[r.state, default: 0] += 1 }
        for (state, n) in counts {
            registry.makeGauge(name: "edgefleet_rollouts", labels: [("state", state.rawValue)], help: "Rollouts by state").set(n)
        }
    }
}
