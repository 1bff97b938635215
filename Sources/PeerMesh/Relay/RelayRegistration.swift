import Crypto
import Foundation

/// The header a node behind NAT sends on each idle plain TCP connection it pre-registers with a
/// gateway for relay-over-SNI (see docs/peermesh.md "Relay-over-SNI"). Fixed length, 210 bytes,
/// all integers big-endian:
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |            magic "UGRS" = 0x55 0x47 0x52 0x53                 |   0
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  version = 1  |  node public key: 65 bytes, uncompressed P-256 |   4
/// +-+-+-+-+-+-+-+-+  point 0x04 ‖ X ‖ Y (its SHA-256 is the node ID) |
/// |                          ...                                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  gateway ID: 52 ASCII bytes (base32), the gateway this is for  |  70
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  timestamp: 8 bytes, milliseconds since the Unix epoch         | 122
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  nonce: 16 random bytes                                        | 130
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  signature: 64 bytes, ECDSA P-256 / SHA-256 (r ‖ s, FIPS       | 146
/// |  186-5 §6.4) by the node key over bytes 0..<146                |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// The magic's first byte (0x55) can never start a TLS record (0x14–0x17), so the mesh port tells
/// registrations and TLS apart by the first byte. The gateway answers one ASCII line: `OK\n`, or
/// `ERROR <code>: <reason>\n` and closes.
public struct RelayRegistration: Hashable, Sendable {
    public static let magic: [UInt8] = Array("UGRS".utf8)
    public static let version: UInt8 = 1
    public static let length = 210
    /// Bytes covered by the signature.
    static let signedLength = 146

    /// The registering node (from the public key in the header).
    public var node: NodeID
    /// The gateway the registration is addressed to.
    public var gatewayID: String
    /// Milliseconds since the Unix epoch when the node made the header.
    public var timestamp: UInt64
    public var nonce: [UInt8]
    public var signature: [UInt8]

    /// Makes and signs a header for `gatewayID` with the node key.
    public static func make(
        key: P256.Signing.PrivateKey, gatewayID: String, timestamp: UInt64, nonce: [UInt8]
    ) throws -> [UInt8] {
        guard gatewayID.utf8.count == 52, nonce.count == 16 else {
            throw MeshError(.config, "relay registration needs a 52-character gateway ID and a 16-byte nonce")
        }
        var bytes = magic + [version] + Array(key.publicKey.x963Representation) + Array(gatewayID.utf8)
        withUnsafeBytes(of: timestamp.bigEndian) { bytes += $0 }
        bytes += nonce
        let signature = try key.signature(for: bytes)
        return bytes + Array(signature.rawRepresentation)
    }

    /// Parses a header from the start of `bytes`: nil when fewer than `length` bytes are there
    /// yet (more must be read), throws on a malformed header. Does not verify the signature.
    public static func parse(_ bytes: some Collection<UInt8>) throws -> RelayRegistration? {
        let b = Array(bytes.prefix(length))
        let known = min(b.count, 4)
        guard b[0..<known].elementsEqual(magic[0..<known]) else {
            throw MeshError(.badRequest, "not a relay registration (bad magic)")
        }
        if b.count > 4, b[4] != version {
            throw MeshError(.badRequest, "relay registration version \(b[4]) is not supported (only \(version))")
        }
        guard b.count == length else { return nil }
        let node: NodeID
        do { node = try NodeID(publicKey: Array(b[5..<70])) } catch {
            throw MeshError(.badRequest, "relay registration carries a bad public key: \(error)")
        }
        let gateway = String(decoding: b[70..<122], as: UTF8.self)
        guard gateway.utf8.allSatisfy(PeerPolicy.isBase32) else {
            throw MeshError(.badRequest, "relay registration names a malformed gateway ID")
        }
        let timestamp = b[122..<130].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return RelayRegistration(
            node: node, gatewayID: gateway, timestamp: timestamp, nonce: Array(b[130..<146]), signature: Array(b[146..<210]))
    }

    /// The header bytes (as sent), re-encoded from the fields.
    var signedBytes: [UInt8] {
        var bytes = Self.magic + [Self.version] + node.publicKey + Array(gatewayID.utf8)
        withUnsafeBytes(of: timestamp.bigEndian) { bytes += $0 }
        return bytes + nonce
    }

    /// Whether the signature was made by the key in the header over the header's fields.
    var signatureIsValid: Bool {
        guard let key = try? P256.Signing.PublicKey(x963Representation: node.publicKey),
              let signature = try? P256.Signing.ECDSASignature(rawRepresentation: signature)
        else { return false }
        return key.isValidSignature(signature, for: signedBytes)
    }
}

/// The gateway's checks on a registration, as a value: known peer, addressed to this gateway,
/// valid signature, fresh timestamp, nonce not seen before. Events in (`admit` with the clock
/// reading), verdicts out; no I/O.
///
/// Replay: a header is accepted once. Nonces are remembered for the freshness window (a replay
/// after that is stale), and a header older than the gateway's own start is refused, so a
/// restarted gateway (which forgot its nonces) cannot be fed headers captured before it started.
/// A node whose clock runs behind the gateway's is refused until its clock passes that start.
public struct RelayAdmission: Sendable {
    public let gatewayID: String
    /// Milliseconds since the Unix epoch when this gateway started.
    public let startedAt: UInt64
    /// How far a timestamp may be from the gateway's clock, milliseconds.
    public let windowMillis: UInt64
    private var seen: [[UInt8]: UInt64] = [:]

    public init(gatewayID: String, startedAt: UInt64, windowMillis: UInt64 = 30_000) {
        self.gatewayID = gatewayID
        self.startedAt = startedAt
        self.windowMillis = windowMillis
    }

    /// Checks `registration` at wall-clock time `now` (ms); on success remembers its nonce.
    public mutating func admit(_ registration: RelayRegistration, policy: PeerPolicy, now: UInt64) -> Result<Void, MeshError> {
        seen = seen.filter { $0.value + windowMillis >= now }
        let id = registration.node.id
        guard policy.peer(id) != nil else {
            return .failure(MeshError(.unknownPeer, "node \(id) is not a known peer of this gateway"))
        }
        guard registration.gatewayID == gatewayID else {
            return .failure(MeshError(.forbidden, "registration of \(id) is for gateway \(registration.gatewayID), not this one"))
        }
        guard registration.signatureIsValid else {
            return .failure(MeshError(.wrongKey, "registration of \(id) has no valid signature by its key"))
        }
        let ts = registration.timestamp
        guard ts + windowMillis >= now, ts <= now + windowMillis, ts >= startedAt else {
            return .failure(MeshError(.replayed, "registration of \(id) is stale or from the future (timestamp \(ts), now \(now))"))
        }
        guard seen[registration.nonce] == nil else {
            return .failure(MeshError(.replayed, "registration of \(id) was already used (replayed nonce)"))
        }
        seen[registration.nonce] = ts
        return .success(())
    }

    /// Milliseconds since the Unix epoch, from the wall clock.
    public static func wallClockMillis() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }
}
