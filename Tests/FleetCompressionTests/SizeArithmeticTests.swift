import Testing
@testable import FleetCompression

@Suite("Tensor size arithmetic on hostile shapes")
struct SizeArithmeticTests {
    @Test func fourBitCountsNearTheLimitDoNotTrap() {
        // 2^61 - 1 four-bit elements: the bit count fits in Int64 but rounding up used to overflow.
        let n: Int64 = (1 << 61) - 1
        #expect(TensorDType.int4.byteCount(elements: n) == (n * 4) / 8 + 1)
        #expect(TensorDType.uint4.byteCount(elements: 3) == 2)
        #expect(TensorDType.int4.byteCount(elements: Int64.max) == nil)
        #expect(TensorDType.int4.byteCount(elements: -1) == nil)
    }
}
