import NIOCore
import NIOHPACK

/// HPACK (RFC 7541) encoding of the gateway's field blocks without the dynamic table, as
/// nginx encodes its responses: a field that is in the static table whole (`:status: 200`) is
/// its index (§6.1), a name in the static table is its index with the value as a literal, any
/// other name a literal; none is added to the dynamic table (literal without indexing,
/// §6.2.2, or never indexed, §6.2.3, when the field asks for it), no Huffman coding.
///
/// Instead of NIOHPACK's `HPACKEncoder`, which looked every field up in its dynamic table (a
/// dictionary of case-insensitive names, hashed per field) and Huffman-coded every string:
/// about 9,700 instructions per response of five fields (a third of the gateway's HTTP/2 work
/// per request in `scripts/callgrind-httproute --protocol h2c`), here a few hundred. The cost
/// is bytes on the wire: a repeated `server` or `content-type` value is sent again in every
/// response instead of as one byte.
///
/// The dynamic table stays empty, but its size is still the client's to lower
/// (SETTINGS_HEADER_TABLE_SIZE): a change is signalled at the start of the next block (§4.2,
/// §6.3: the smallest size since the last block first when it is below the final one), as
/// decoders such as nghttp2's require.
struct H2FieldEncoder {
    /// The largest dynamic table the encoder announces (the HPACK default).
    static let maxTableSize = 4096

    private var tableSize = maxTableSize
    /// The smallest table size set since the last block, when one changed it.
    private var smallestPending: Int?

    /// The client's SETTINGS_HEADER_TABLE_SIZE (at most `maxTableSize` is used).
    mutating func setTableSize(_ size: Int) {
        let size = min(size, Self.maxTableSize)
        guard size != tableSize || smallestPending != nil else { return }
        smallestPending = min(smallestPending ?? tableSize, size)
        tableSize = size
    }

    /// Appends the field block of `fields` to `buffer` (names written in lower case).
    mutating func encode(_ fields: HPACKHeaders, to buffer: inout ByteBuffer) {
        sizeUpdates(to: &buffer)
        for (name, value, indexing) in fields {
            Self.field(name, value, neverIndexed: indexing == .neverIndexed, to: &buffer)
        }
    }

    /// Appends the field block of a response head to `buffer`: `:status`, then the fields
    /// `keep` accepts, in order, names written in lower case (RFC 9113 §8.2) — straight from
    /// the head's fields, without an `HPACKHeaders` or lower-cased strings in between.
    mutating func encode(status: Int, fields: [HTTPField], keep: (HTTPField) -> Bool, to buffer: inout ByteBuffer) {
        sizeUpdates(to: &buffer)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 32) { out in
            var at = 0
            if let index = Self.statusIndex(status) {
                Self.integer(index, prefix: 7, flags: 0x80, to: out, at: &at)
            } else {
                // Literal without indexing, name `:status` (8), the code's three digits.
                Self.integer(8, prefix: 4, flags: 0, to: out, at: &at)
                var text = String(status)
                text.withUTF8 { Self.string($0, to: out, at: &at) }
            }
            return at
        }
        for index in fields.indices where keep(fields[index]) {
            Self.field(fields[index].name, fields[index].value, neverIndexed: false, to: &buffer)
        }
    }

    /// The dynamic table size updates not signalled yet (at the start of a block).
    private mutating func sizeUpdates(to buffer: inout ByteBuffer) {
        guard let smallest = smallestPending else { return }
        smallestPending = nil
        let size = tableSize
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 12) { out in
            var at = 0
            if smallest < size { Self.integer(smallest, prefix: 5, flags: 0x20, to: out, at: &at) }
            Self.integer(size, prefix: 5, flags: 0x20, to: out, at: &at)
            return at
        }
    }

    private static func field(_ name: String, _ value: String, neverIndexed: Bool, to buffer: inout ByteBuffer) {
        _ = utf8Bytes(of: name) { name in
            utf8Bytes(of: value) { value in
                // Two integers of at most 6 bytes each (lengths below 2^35), the literals.
                buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: name.count + value.count + 13) { out in
                    var at = 0
                    field(name, value, neverIndexed: neverIndexed, to: out, at: &at)
                    return at
                }
            }
        }
    }

    private static func field(
        _ name: UnsafeBufferPointer<UInt8>, _ value: UnsafeBufferPointer<UInt8>, neverIndexed: Bool, to out: UnsafeMutableRawBufferPointer,
        at: inout Int
    ) {
        let index = staticIndex(name)
        if index == 8, !neverIndexed, let status = statusIndex(value) {
            integer(status, prefix: 7, flags: 0x80, to: out, at: &at)
            return
        }
        // Literal without indexing (0000) or never indexed (0001), name by index or literal.
        integer(index, prefix: 4, flags: neverIndexed ? 0x10 : 0, to: out, at: &at)
        if index == 0 {
            integer(name.count, prefix: 7, flags: 0, to: out, at: &at)
            for byte in name {
                out[at] = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
                at += 1
            }
        }
        string(value, to: out, at: &at)
    }

    /// A string literal (§5.2), not Huffman-coded.
    private static func string(_ bytes: UnsafeBufferPointer<UInt8>, to out: UnsafeMutableRawBufferPointer, at: inout Int) {
        integer(bytes.count, prefix: 7, flags: 0, to: out, at: &at)
        if let base = bytes.baseAddress, !bytes.isEmpty {
            (out.baseAddress! + at).copyMemory(from: base, byteCount: bytes.count)
            at += bytes.count
        }
    }

    /// An integer with an N-bit prefix (§5.1), `flags` in the first byte's other bits.
    static func integer(_ value: Int, prefix: Int, flags: UInt8, to out: UnsafeMutableRawBufferPointer, at: inout Int) {
        let limit = (1 << prefix) - 1
        if value < limit {
            out[at] = flags | UInt8(value)
            at += 1
            return
        }
        out[at] = flags | UInt8(limit)
        at += 1
        var rest = value - limit
        while rest >= 128 {
            out[at] = UInt8(rest & 0x7F) | 0x80
            at += 1
            rest >>= 7
        }
        out[at] = UInt8(rest)
        at += 1
    }

    /// The static table's index of a `:status` field with this value (§Appendix A), or nil.
    private static func statusIndex(_ value: UnsafeBufferPointer<UInt8>) -> Int? {
        guard value.count == 3, value.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        let hundreds = Int(value[0] - 0x30)
        let tens = Int(value[1] - 0x30)
        let ones = Int(value[2] - 0x30)
        return statusIndex(hundreds * 100 + tens * 10 + ones)
    }

    private static func statusIndex(_ code: Int) -> Int? {
        switch code {
        case 200: 8
        case 204: 9
        case 206: 10
        case 304: 11
        case 400: 12
        case 404: 13
        case 500: 14
        default: nil
        }
    }

    /// The first static-table index with this name (RFC 7541 Appendix A), ASCII case ignored
    /// (a token's bytes with 0x20 set match the table's lower-case names only for the same
    /// letters: no other token byte becomes a letter, `-` or `:`); 0 when none. By length
    /// first: most names are compared with one or two literals, most of those end at the
    /// first byte.
    static func staticIndex(_ name: UnsafeBufferPointer<UInt8>) -> Int {
        switch name.count {
        case 3:
            if equal(name, "age") { return 21 }
            if equal(name, "via") { return 60 }
        case 4:
            if equal(name, "date") { return 33 }
            if equal(name, "etag") { return 34 }
            if equal(name, "from") { return 37 }
            if equal(name, "host") { return 38 }
            if equal(name, "link") { return 45 }
            if equal(name, "vary") { return 59 }
        case 5:
            if equal(name, ":path") { return 4 }
            if equal(name, "allow") { return 22 }
            if equal(name, "range") { return 50 }
        case 6:
            if equal(name, "accept") { return 19 }
            if equal(name, "cookie") { return 32 }
            if equal(name, "expect") { return 35 }
            if equal(name, "server") { return 54 }
        case 7:
            if equal(name, ":method") { return 2 }
            if equal(name, ":scheme") { return 6 }
            if equal(name, ":status") { return 8 }
            if equal(name, "expires") { return 36 }
            if equal(name, "referer") { return 51 }
            if equal(name, "refresh") { return 52 }
        case 8:
            if equal(name, "if-match") { return 39 }
            if equal(name, "if-range") { return 42 }
            if equal(name, "location") { return 46 }
        case 10:
            if equal(name, ":authority") { return 1 }
            if equal(name, "set-cookie") { return 55 }
            if equal(name, "user-agent") { return 58 }
        case 11:
            if equal(name, "retry-after") { return 53 }
        case 12:
            if equal(name, "content-type") { return 31 }
            if equal(name, "max-forwards") { return 47 }
        case 13:
            if equal(name, "accept-ranges") { return 18 }
            if equal(name, "authorization") { return 23 }
            if equal(name, "cache-control") { return 24 }
            if equal(name, "content-range") { return 30 }
            if equal(name, "if-none-match") { return 41 }
            if equal(name, "last-modified") { return 44 }
        case 14:
            if equal(name, "accept-charset") { return 15 }
            if equal(name, "content-length") { return 28 }
        case 15:
            if equal(name, "accept-encoding") { return 16 }
            if equal(name, "accept-language") { return 17 }
        case 16:
            if equal(name, "content-encoding") { return 26 }
            if equal(name, "content-language") { return 27 }
            if equal(name, "content-location") { return 29 }
            if equal(name, "www-authenticate") { return 61 }
        case 17:
            if equal(name, "if-modified-since") { return 40 }
            if equal(name, "transfer-encoding") { return 57 }
        case 18:
            if equal(name, "proxy-authenticate") { return 48 }
        case 19:
            if equal(name, "content-disposition") { return 25 }
            if equal(name, "if-unmodified-since") { return 43 }
            if equal(name, "proxy-authorization") { return 49 }
        case 25:
            if equal(name, "strict-transport-security") { return 56 }
        case 27:
            if equal(name, "access-control-allow-origin") { return 20 }
        default: break
        }
        return 0
    }

    private static func equal(_ name: UnsafeBufferPointer<UInt8>, _ literal: StaticString) -> Bool {
        let bytes = literal.utf8Start
        for i in 0..<name.count where name[i] | 0x20 != bytes[i] { return false }
        return true
    }
}
