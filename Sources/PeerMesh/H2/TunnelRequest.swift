import Gate

/// A tunnel request on the mesh ports, parsed from HTTP/2 request pseudo-headers.
///
/// Two forms carry the same byte stream (request body = client→server bytes, response body =
/// server→client bytes, END_STREAM = half-close in that direction, RST_STREAM = abort):
///
/// - ugate `/dm/` (DESIGN.md "ugate mesh H2"):
///   ```
///   :method POST
///   :path   /dm/<host:port>          IPv6 literals in brackets: /dm/[fd00::1]:80
///   ```
/// - HBONE, HTTP/2 extended CONNECT without `:protocol` (RFC 9113 §8.5; Istio port 15008):
///   ```
///   :method    CONNECT
///   :authority <host:port>
///   ```
/// Both forms may carry `from: <node ID>`: the identity the stream started at (set by the
/// originating node, passed on unchanged by relaying hops). It is provenance vouched for by the
/// authenticated previous hop, not authentication: each hop authorizes its mTLS peer.
///
/// Responses: `200` tunnel open; `400` malformed request; `403` caller may not reach the
/// destination; `500` (`/dm/`) or `503` (HBONE, as Istio's ztunnel) destination unreachable. Error
/// responses carry the reason in an `error` header and end the stream.
public struct TunnelRequest: Hashable, Sendable {
    public enum Kind: String, Codable, Sendable {
        case dm
        case hbone
    }

    public var kind: Kind
    public var destination: Destination
    /// The `from` header: the node ID the stream started at.
    public var from: String?

    public init(kind: Kind, destination: Destination, from: String? = nil) {
        self.kind = kind
        self.destination = destination
        self.from = from
    }

    /// Parses request header fields (pseudo-headers included, in any order).
    public static func parse(_ fields: [(name: String, value: String)]) throws -> TunnelRequest {
        func field(_ name: String) -> String? { fields.first { $0.name == name }?.value }
        guard let method = field(":method") else { throw MeshError(.badRequest, "request has no :method", status: 400) }
        let from = field("from")
        if let from, from.utf8.count != 52 || !from.utf8.allSatisfy(PeerPolicy.isBase32) {
            throw MeshError(.badRequest, "from header \"\(from)\" is not a node ID", status: 400)
        }
        switch method {
        case "CONNECT":
            guard let authority = field(":authority") else {
                throw MeshError(.badRequest, "CONNECT request has no :authority", status: 400)
            }
            return TunnelRequest(kind: .hbone, destination: try parseDestination(authority), from: from)
        case "POST":
            let path = field(":path") ?? ""
            guard path.hasPrefix("/dm/") else {
                throw MeshError(.badRequest, "POST to \"\(path)\": only /dm/<host:port> is served", status: 400)
            }
            return TunnelRequest(kind: .dm, destination: try parseDestination(String(path.dropFirst(4))), from: from)
        default:
            throw MeshError(.badRequest, "method \(method) is not a tunnel request (POST /dm/ or CONNECT)", status: 400)
        }
    }

    /// The request header fields for this tunnel, in HTTP/2 order (pseudo-headers first).
    public func headerFields(scheme: String = "https", authority: String) -> [(name: String, value: String)] {
        let fields: [(name: String, value: String)]
        switch kind {
        case .dm:
            fields = [(":method", "POST"), (":scheme", scheme), (":authority", authority), (":path", "/dm/\(destination)")]
        case .hbone:
            fields = [(":method", "CONNECT"), (":authority", destination.description)]
        }
        return fields + (from.map { [("from", $0)] } ?? [])
    }

    /// Status for a destination that could not be reached.
    public var unreachableStatus: Int { kind == .dm ? 500 : 503 }

    /// Parses `host:port` or `[v6]:port`.
    public static func parseDestination(_ text: String) throws -> Destination {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw MeshError(.badRequest, "destination \"\(text)\" is not [ipv6]:port", status: 400)
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw MeshError(.badRequest, "destination \"\(text)\" is not host:port", status: 400)
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { throw MeshError(.badRequest, "IPv6 destination \"\(text)\" needs brackets", status: 400) }
        }
        guard !host.isEmpty, let port = UInt16(portText), port != 0 else {
            throw MeshError(.badRequest, "destination \"\(text)\" needs a host and a port 1-65535", status: 400)
        }
        return Destination(host: String(host), port: port)
    }
}
