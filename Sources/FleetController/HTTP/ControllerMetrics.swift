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

    init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        checkIns = registry.makeCounter(name: "edgefleet_checkins_total", help: "Device check-ins handled")
        assignmentsSigned = registry.makeCounter(name: "edgefleet_assignments_signed_total", help: "Per-device assignments signed by the director key")
        eventsStored = registry.makeCounter(name: "edgefleet_events_stored_total", help: "Device status events stored")
        eventsDuplicate = registry.makeCounter(name: "edgefleet_events_duplicate_total", help: "Device status events received again and ignored")
        artifactBytesServed = registry.makeCounter(name: "edgefleet_artifact_bytes_served_total", help: "Artifact bytes sent to clients")
        artifactsUploaded = registry.makeCounter(name: "edgefleet_artifacts_uploaded_total", help: "Artifacts uploaded")
        devices = registry.makeGauge(name: "edgefleet_devices", help: "Devices known to the controller")
    }
}
