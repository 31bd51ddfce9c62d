import FleetIO

/// Finds the initializer tensors of an ONNX file by walking the protobuf wire format, without a
/// schema: ModelProto field 7 is the graph, GraphProto field 5 its initializers (TensorProto), whose
/// field 1 is dims, 2 data_type, 8 name and 9 raw_data. Only initializers with raw_data count as
/// tensors; everything else stays in the structure bytes.
enum ONNXWalker {
    static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<TensorLayout, TensorLayout.ParseFailure> {
        var tensors: [TensorLayout.Tensor] = []
        do {
            var sawGraph = false
            try fields(bytes, 0, bytes.count) { field, wire, start, end in
                guard field == 7, wire == 2 else { return }
                sawGraph = true
                try fields(bytes, start, end) { gField, gWire, gStart, gEnd in
                    guard gField == 5, gWire == 2 else { return }
                    if let t = try initializer(bytes, gStart, gEnd) { tensors.append(t) }
                }
            }
            guard sawGraph else { return .failure(.init(message: "no graph (field 7)")) }
        } catch {
            return .failure(.init(message: "\(error)"))
        }
        return TensorLayout.checked(format: .onnx, fileSize: Int64(bytes.count), tensors)
    }

    private static func initializer(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws -> TensorLayout.Tensor? {
        var dims: [Int64] = []
        var dataType: UInt64 = 0
        var name = ""
        var raw: (Int, Int)?
        try fields(b, start, end) { field, wire, s, e in
            switch (field, wire) {
            case (1, 0): dims.append(Int64(bitPattern: try varintValue(b, s)))
            case (1, 2):
                var p = s
                while p < e { let (v, next) = try varint(b, p, e); dims.append(Int64(bitPattern: v)); p = next }
            case (2, 0): dataType = try varintValue(b, s)
            case (8, 2): name = String(decoding: UnsafeRawBufferPointer(rebasing: b[s..<e]), as: UTF8.self)
            case (9, 2): raw = (s, e - s)
            default: break
            }
        }
        guard let raw, !name.isEmpty else { return nil }
        return TensorLayout.Tensor(name: name, dtype: dtype(dataType), shape: dims, offset: Int64(raw.0), length: Int64(raw.1))
    }

    /// ONNX TensorProto.DataType → the safetensors spelling.
    static func dtype(_ code: UInt64) -> String {
        switch code {
        case 1: "F32"
        case 2: "U8"
        case 3: "I8"
        case 4: "U16"
        case 5: "I16"
        case 6: "I32"
        case 7: "I64"
        case 9: "BOOL"
        case 10: "F16"
        case 11: "F64"
        case 12: "U32"
        case 13: "U64"
        case 16: "BF16"
        case 17: "F8_E4M3"
        case 18: "F8_E4M3FNUZ"
        case 19: "F8_E5M2"
        case 20: "F8_E5M2FNUZ"
        default: "ONNX_\(code)"
        }
    }

    /// Calls `body(field, wireType, valueStart, valueEnd)` for each field in `b[start..<end]`; for
    /// wire type 0 the value range is the varint itself. The walker is FleetIO's, shared with the
    /// variant builder; this runs once per field of the model's structure, never per tensor element.
    static func fields(
        _ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int,
        _ body: (UInt64, UInt64, Int, Int) throws -> Void
    ) throws {
        var reader = ProtobufFieldReader(b, start, end)
        while let f = try reader.next() { try body(f.number, f.wire, f.valueStart, f.valueEnd) }
    }

    static func varint(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws -> (UInt64, Int) {
        try ProtobufFieldReader.varint(b, start, end)
    }

    private static func varintValue(_ b: UnsafeRawBufferPointer, _ start: Int) throws -> UInt64 {
        try varint(b, start, b.count).0
    }
}
