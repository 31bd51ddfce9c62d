import FleetCore
import Prometheus

/// Failures held and cells blocked, as the API shows them.
extension ControllerMetrics {
    /// `blocked`: 1 when gates that cannot judge hold the cell; `failedHeld`: devices the release
    /// failed on and that no operator retried.
    func recordCellHolds(rollout: Int64, release: String, cell: CellKey, state: CellState, failedHeld: Int) {
        let base = [("rollout", "\(rollout)"), ("release", release), ("hardware_class", cell.hardwareClass), ("tier", cell.tier)]
        registry.makeGauge(
            name: "edgefleet_cell_blocked", labels: base, help: "1 while gates that cannot judge hold the cell (policy unjudged: block)"
        )
        .set(Int64(state.blockedBy == nil ? 0 : 1))
        registry.makeGauge(
            name: "edgefleet_cell_failed_held", labels: base,
            help: "Devices of the cell the release failed on, held until an operator retries"
        )
        .set(Int64(failedHeld))
    }
}
