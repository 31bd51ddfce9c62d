/// What `DeltaEncoder.encode` did: the method it kept and what every method it tried gave.
public struct DeltaReport: Codable, Sendable, Equatable {
    public struct MethodResult: Codable, Sendable, Equatable {
        public enum Status: String, Codable, Sendable {
            /// The smallest: this is the package written.
            case kept
            /// Encoded, but larger than the one kept.
            case larger
            /// The method does not apply to these files (`note` says why).
            case notApplicable = "not-applicable"
        }

        public var method: DeltaMethod
        public var status: Status
        /// Package size in bytes (nil when not applicable).
        public var size: Int64?
        public var seconds: Double
        /// zstd level the bulk was compressed with.
        public var level: Int?
        public var note: String?
    }

    /// Counts of what the tensor method found, by what happened to each target tensor.
    public struct TensorStats: Codable, Sendable, Equatable {
        public var format: String = ""
        public var unchanged = 0
        public var changed = 0
        public var reshaped = 0
        public var renamed = 0
        public var added = 0
        public var removed = 0
        /// Bytes of structure (non-tensor) in the target.
        public var structureBytes: Int64 = 0
        /// How changed tensors were coded: "xor/dense", "sub-float/sparse", …, with counts.
        public var codings: [String: Int] = [:]
    }

    public var method: DeltaMethod
    public var packageSize: Int64
    public var baseSize: Int64
    public var targetSize: Int64
    public var baseSha256: String
    public var targetSha256: String
    public var seconds: Double
    public var methods: [MethodResult]
    public var tensors: TensorStats?
}
