import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Mixed precision guided by measurement (the `mixed` recipe step). Each candidate plan is built as
/// a real variant and run, with the base, on the calibration inputs by the calibrator
/// (`CMD --agreement BASE VARIANT…`); the mean cosine decides:
///
/// 1. free forms: every group whose activation is a per-channel affine map's output is tried folded
///    (its MatMuls read the map's input; exact, no operator added); the folds that raise the
///    agreement alone are ranked, and the best cumulative set of them (best one, best two, …) is kept;
/// 2. only while the agreement is below the floor: the remaining groups are tried with a smoothing
///    Mul (one element-wise operator), then in fp32 (a float MatMul), ranked the same way, and the
///    shortest cumulative set that meets the floor is added (else the best one).
enum MixedPrecision {
    /// Candidates measured per calibrator run (bounds the temporary files on disk).
    static let batch = 8

    static func search(_ options: VariantBuilder.Options, floor: Double) throws(CompressionError) -> MixedPlan {
        let onnx = try ONNXModel(path: options.input)
        let job = BuildJob(options: options, format: .onnx)
        let decisions = job.decisions(onnx, facts: ONNXGraphFacts(onnx.graph))
        let groups = job.mixedGroups(onnx.graph, decisions: decisions)
        guard let ranges = options.calibration, let calibrator = options.calibrator else {
            return MixedPlan(
                summary: "mixed precision not measured (no calibrator): every MatMul group computes in int8")
        }
        // Bad calibration ranges are refused before anything is built.
        let widths = Dictionary(
            decisions.compactMap { d in d.source.map { (d.name, $0.shape) } }, uniquingKeysWith: { a, _ in a })
        for g in groups {
            guard let r = ranges.absmax[g.activation] else { continue }
            let reader = onnx.graph.node.first { $0.opType == "MatMul" && $0.input.first == g.activation && $0.input.count == 2 }
            if let w = reader.flatMap({ widths[$0.input[1]] }), let k = w.first, r.count != Int(k) {
                throw CompressionError(
                    .shapeMismatch, "the calibration ranges have \(r.count) channels, the MatMuls that read it have \(k)",
                    tensor: g.activation)
            }
        }
        guard !groups.isEmpty else { return MixedPlan(summary: "mixed precision: no int8 MatMul group to measure") }

        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var built = 0
        func measure(_ plans: [MixedPlan]) throws(CompressionError) -> [Double] {
            var out: [Double] = []
            for start in stride(from: 0, to: plans.count, by: batch) {
                var paths: [String] = []
                defer { for p in paths { unlink(p) } }
                for plan in plans[start..<min(start + batch, plans.count)] {
                    built += 1
                    var o = options
                    o.output = dir.path + "/candidate-\(built).onnx"
                    o.zstdLevel = nil
                    o.evaluator = nil
                    o.progress = nil
                    o.mixedPlan = plan
                    _ = try VariantBuilder.build(o)
                    paths.append(o.output)
                }
                out += try Calibrator.agreement(command: calibrator, base: options.input, variants: paths)
            }
            return out
        }

        /// The groups ranked by their measured agreement in `form` (added to `plan` one at a time),
        /// those that beat `current` only; then the cumulative plans (best one, best two, …) measured
        /// together. Returns the shortest prefix that meets the floor, else the best one, when it
        /// beats `current`.
        func ranked(_ form: MixedPlan.Form, _ candidates: [MixedGroup], from plan: MixedPlan, current: Double, stopAtFloor: Bool)
            throws(CompressionError) -> (plan: MixedPlan, agreement: Double, added: [String])?
        {
            guard !candidates.isEmpty else { return nil }
            let alone = try measure(candidates.map { plan.with($0.activation, form) })
            let order = zip(candidates, alone).filter { $0.1 > current }.sorted { $0.1 > $1.1 }.map(\.0.activation)
            guard !order.isEmpty else { return nil }
            var prefixes: [MixedPlan] = []
            var p = plan
            for a in order {
                p = p.with(a, form)
                prefixes.append(p)
            }
            let measured = order.count == 1 ? [alone[candidates.firstIndex { $0.activation == order[0] }!]] : try measure(prefixes)
            let pick =
                (stopAtFloor ? measured.firstIndex { $0 >= floor } : nil) ?? measured.indices.max { measured[$0] < measured[$1] }!
            guard measured[pick] > current else { return nil }
            return (prefixes[pick], measured[pick], Array(order[...pick]))
        }

        var plan = MixedPlan()
        let int8 = try measure([plan])[0]
        var current = int8
        let foldable = groups.filter { $0.normalized != nil }
        var folds: [String] = []
        if let r = try ranked(.folded, foldable, from: plan, current: current, stopAtFloor: false) {
            (plan, current, folds) = r
        }
        let afterFolds = current
        var added: [MixedPlan.Form: [String]] = [:]
        for form in [MixedPlan.Form.smoothed, .fp32] where current < floor {
            let candidates = groups.filter {
                plan.forms[$0.activation] == nil && (form != .smoothed || ranges.absmax[$0.activation] != nil)
            }
            if let r = try ranked(form, candidates, from: plan, current: current, stopAtFloor: true) {
                (plan, current, added[form]) = r
            }
        }
        func list(_ names: [String]?) -> String { names.map { "\($0.count) (\($0.joined(separator: ", ")))" } ?? "0" }
        func f(_ x: Double) -> String { String(format: "%.5f", x) }
        plan.summary =
            "mixed precision measured on the calibration inputs (\(built) variants built): mean cosine \(f(int8)) all int8; "
            + "\(folds.count) of \(groups.count) MatMul groups folded into their affine map's input (\(foldable.count) foldable): "
            + "\(f(afterFolds)); smoothed \(list(added[.smoothed])), fp32 \(list(added[.fp32])): \(f(current)), "
            + "floor \(f(floor)) \(current >= floor ? "met" : "NOT met")"
        return plan
    }
}

/// A directory of its own under the system's temporary directory, removed with its files.
struct TemporaryDirectory {
    let path: String

    init() throws(CompressionError) {
        var template = Array((NSTemporaryDirectory() + "/edgefleet-mixed.XXXXXX").utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw CompressionError.errno(NSTemporaryDirectory(), "cannot create a temporary directory")
        }
        path = String(cString: p)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
