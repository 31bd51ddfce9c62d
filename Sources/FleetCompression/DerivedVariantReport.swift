import FleetCore
import Foundation

/// The report of a variant trained elsewhere (a distilled student, an efficient-architecture
/// variant): its bytes against its teacher's and the evaluator's output agreement with the teacher.
/// Its tensors have no counterpart in the teacher, so there are no per-tensor errors.
public enum DerivedVariantReport {
    public static func measure(
        teacher: String, student: String, technique: String, evaluator: String,
        zstdLevel: Int? = 3
    ) throws(CompressionError) -> VariantReport {
        guard Lineage.techniques.contains(technique) else {
            throw CompressionError(.recipe, "technique must be one of \(Lineage.techniques.joined(separator: ", "))")
        }
        let tf = try VariantBuilder.format(of: teacher), sf = try VariantBuilder.format(of: student)
        let tBytes = try ReadableFile(teacher).size, sBytes = try ReadableFile(student).size
        let tz = try zstdLevel.map { (l) throws(CompressionError) in try BuildJob.zstdSize(teacher, level: l) }
        let sz = try zstdLevel.map { (l) throws(CompressionError) in try BuildJob.zstdSize(student, level: l) }
        let evaluation = try Evaluator.run(command: evaluator, base: teacher, variant: student, format: sf.rawValue)
        var notes = ["\(technique) variant: output agreement measured against its teacher; no per-tensor comparison"]
        if tf != sf { notes.append("teacher is \(tf.rawValue), student is \(sf.rawValue)") }
        if evaluation.meanCosine < 0.9 {
            notes.append(
                String(format: "output agreement is poor: mean cosine %.4f, minimum %.4f", evaluation.meanCosine, evaluation.minCosine))
        }
        return VariantReport(
            tool: VariantBuilder.tool, toolVersion: VariantBuilder.toolVersion, recipe: technique, steps: [technique],
            technique: technique, dtype: "fp32",
            input: .init(path: teacher, format: tf.rawValue, bytes: tBytes, zstdBytes: tz, sha256: try BuildJob.sha256(teacher)),
            output: .init(path: student, format: sf.rawValue, bytes: sBytes, zstdBytes: sz, sha256: try BuildJob.sha256(student)),
            zstdLevel: zstdLevel, compressionRatio: sBytes > 0 ? Double(tBytes) / Double(sBytes) : 0,
            compressedRatio: tz.flatMap { t in sz.map { Double(t) / Double(max($0, 1)) } },
            tensorsChanged: 0, tensorsKept: 0, worstRelativeL2: nil, meanSnrDb: nil, sparsity: nil, overflow: 0,
            tensors: [], evaluation: evaluation, notes: notes)
    }
}
