/// Element types of tensors in ONNX and safetensors files. `bits` is the storage size of one
/// element; sub-byte types pack two (int4) elements per byte, low nibble first.
enum TensorDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i8 = "I8", u8 = "U8", i16 = "I16", u16 = "U16", i32 = "I32", u32 = "U32", i64 = "I64", u64 = "U64"
    case bool = "BOOL"
    case int4 = "I4", uint4 = "U4"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    var bits: Int {
        switch self {
        case .f32, .i32, .u32: 32
        case .f16, .bf16, .i16, .u16: 16
        case .f64, .i64, .u64: 64
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: 8
        case .int4, .uint4: 4
        }
    }

    /// Floating-point types a recipe may transform (read into fp32 first).
    var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 || self == .f64 }

    /// Bytes `count` elements occupy; nil on overflow.
    func byteCount(elements count: Int64) -> Int64? {
        guard count >= 0 else { return nil }
        let (bits, o) = count.multipliedReportingOverflow(by: Int64(self.bits))
        return o ? nil : bits / 8 + (bits % 8 == 0 ? 0 : 1)
    }

    /// ONNX TensorProto.DataType codes; nil for codes this builder does not read.
    init?(onnx code: Int32) {
        switch code {
        case 1: self = .f32
        case 2: self = .u8
        case 3: self = .i8
        case 4: self = .u16
        case 5: self = .i16
        case 6: self = .i32
        case 7: self = .i64
        case 9: self = .bool
        case 10: self = .f16
        case 11: self = .f64
        case 12: self = .u32
        case 13: self = .u64
        case 16: self = .bf16
        case 17: self = .f8e4m3
        case 19: self = .f8e5m2
        case 21: self = .uint4
        case 22: self = .int4
        default: return nil
        }
    }

    var onnxCode: Int32 {
        switch self {
        case .f32: 1
        case .u8: 2
        case .i8: 3
        case .u16: 4
        case .i16: 5
        case .i32: 6
        case .i64: 7
        case .bool: 9
        case .f16: 10
        case .f64: 11
        case .u32: 12
        case .u64: 13
        case .bf16: 16
        case .f8e4m3: 17
        case .f8e5m2: 19
        case .uint4: 21
        case .int4: 22
        }
    }

    /// safetensors spells these as the raw values; it has no 4-bit types.
    init?(safetensors name: String) {
        guard let t = TensorDType(rawValue: name), t != .int4, t != .uint4 else { return nil }
        self = t
    }
}

/// Element count of a shape; nil when a dimension is negative or the product overflows.
func elementCount(_ shape: [Int64]) -> Int64? {
    var n: Int64 = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = p
    }
    return n
}
