/// One ICE candidate as carried in SDP (RFC 8839 §5.1).
///
/// ```
/// candidate-attribute   = "candidate" ":" foundation SP component-id SP
///                         transport SP priority SP connection-address SP port
///                         SP cand-type [SP rel-addr] [SP rel-port]
///                         *(SP cand-extension)
/// cand-type             = "typ" SP ("host" / "srflx" / "prflx" / "relay" / token)
/// rel-addr              = "raddr" SP connection-address
/// rel-port              = "rport" SP port
/// cand-extension        = extension-att-name SP extension-att-value
/// ```
///
/// Example: `candidate:1 1 UDP 2013266431 192.0.2.1 50000 typ host`, or for TCP (RFC 6544 §4.5)
/// `candidate:2 1 TCP 1015022079 192.0.2.1 9 typ host tcptype active`.
/// https://www.rfc-editor.org/rfc/rfc8839#section-5.1
public struct ICECandidate: Hashable, Sendable, Codable {
    /// The candidate type (`typ`).
    public enum Kind: String, Hashable, Sendable, Codable, CaseIterable {
        case host, srflx, prflx, relay
    }

    /// The transport protocol of the candidate.
    public enum Transport: String, Hashable, Sendable, Codable {
        case udp = "UDP"
        case tcp = "TCP"
    }

    /// The role of a TCP candidate (RFC 6544 §4.5).
    public enum TCPType: String, Hashable, Sendable, Codable {
        case active, passive, so
    }

    /// An extension attribute kept as written (`generation 0`, `network-id 1`, …).
    public struct Extension: Hashable, Sendable, Codable {
        /// Attribute name.
        public var name: String
        /// Attribute value.
        public var value: String

        /// Creates an extension attribute.
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// 1–32 ice-chars identifying candidates of the same base and server.
    public var foundation: String
    /// Component ID, 1–256 (1 for a data channel).
    public var component: Int
    /// UDP or TCP.
    public var transport: Transport
    /// RFC 8445 §5.1.2 priority.
    public var priority: UInt32
    /// IP literal (IPv4 or IPv6) or a host name such as an mDNS `.local` name.
    public var address: String
    /// Port (9 is the discard port used by active TCP candidates).
    public var port: UInt16
    /// Candidate type.
    public var kind: Kind
    /// Related address (`raddr`) for srflx, prflx and relay candidates.
    public var relatedAddress: String?
    /// Related port (`rport`).
    public var relatedPort: UInt16?
    /// TCP candidate type; only for TCP candidates.
    public var tcpType: TCPType?
    /// Other extension attributes, in order.
    public var extensions: [Extension]

    /// Creates a candidate.
    public init(
        foundation: String, component: Int = 1, transport: Transport = .udp, priority: UInt32,
        address: String, port: UInt16, kind: Kind, relatedAddress: String? = nil,
        relatedPort: UInt16? = nil, tcpType: TCPType? = nil, extensions: [Extension] = []
    ) {
        self.foundation = foundation
        self.component = component
        self.transport = transport
        self.priority = priority
        self.address = address
        self.port = port
        self.kind = kind
        self.relatedAddress = relatedAddress
        self.relatedPort = relatedPort
        self.tcpType = tcpType
        self.extensions = extensions
    }

    /// True for an mDNS host name (`<uuid>.local`, draft-ietf-mmusic-mdns-ice-candidates).
    public var isMDNS: Bool { address.lowercased().hasSuffix(".local") }

    /// True when `address` is an IPv4 or IPv6 literal.
    public var hasIPLiteral: Bool { IPLiteral.isIPv4(address) || IPLiteral.isIPv6(address) }

    /// The attribute value, starting with `candidate:` (no `a=` prefix).
    public var attributeValue: String {
        var s = "candidate:\(foundation) \(component) \(transport.rawValue) \(priority) \(address) \(port) typ \(kind.rawValue)"
        if let relatedAddress { s += " raddr \(relatedAddress)" }
        if let relatedPort { s += " rport \(relatedPort)" }
        if let tcpType { s += " tcptype \(tcpType.rawValue)" }
        for ext in extensions { s += " \(ext.name) \(ext.value)" }
        return s
    }

    /// The SDP line `a=candidate:…`.
    public var sdpLine: String { "a=" + attributeValue }

    /// Parses a candidate with or without the `a=` prefix, and with or without `candidate:`
    /// (the form `RTCIceCandidate.candidate` uses has the prefix, some signalling drops it).
    public init(parsing line: String) throws {
        var text = Substring(line)
        while let last = text.last, last.isNewline { text.removeLast() }
        if text.hasPrefix("a=") { text = text.dropFirst(2) }
        if text.lowercased().hasPrefix("candidate:") { text = text.dropFirst("candidate:".count) }
        func fail(_ why: String) -> ICEError {
            ICEError(.malformedCandidate, "\(why) in candidate line \"\(line)\"")
        }
        let fields = text.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count >= 8 else {
            throw fail("expected at least 8 fields (foundation component transport priority address port typ type), found \(fields.count)")
        }
        guard let first = fields.first, fields.allSatisfy({ !$0.isEmpty }) else {
            throw fail("empty field (double space)")
        }
        let foundation = String(first)
        guard (1...32).contains(foundation.count), foundation.allSatisfy(IceChar.isIceChar) else {
            throw fail("foundation \"\(foundation)\" is not 1-32 ice-chars")
        }
        guard fields[1].count <= 3, let component = Int(fields[1]), (1...256).contains(component) else {
            throw fail("component-id \"\(fields[1])\" is not 1-256")
        }
        guard let transport = Transport(rawValue: fields[2].uppercased()) else {
            throw fail("transport \"\(fields[2])\" is neither UDP nor TCP")
        }
        guard fields[3].count <= 10, fields[3].allSatisfy(\.isASCIIDigit), let priority = UInt32(fields[3]) else {
            throw fail("priority \"\(fields[3])\" is not a 32-bit unsigned integer")
        }
        let address = String(fields[4])
        guard IPLiteral.isIPv4(address) || IPLiteral.isIPv6(address) || IPLiteral.isHostName(address) else {
            throw fail("connection-address \"\(address)\" is neither an IP literal nor a host name")
        }
        guard let port = Self.parsePort(fields[5]) else {
            throw fail("port \"\(fields[5])\" is not 0-65535")
        }
        guard fields[6] == "typ" else {
            throw fail("expected \"typ\" as 7th field, found \"\(fields[6])\"")
        }
        guard let kind = Kind(rawValue: String(fields[7]).lowercased()) else {
            throw fail("candidate type \"\(fields[7])\" is not host, srflx, prflx or relay")
        }
        var relatedAddress: String?
        var relatedPort: UInt16?
        var tcpType: TCPType?
        var extensions: [Extension] = []
        var index = 8
        while index < fields.count {
            let name = String(fields[index])
            guard index + 1 < fields.count else {
                throw fail("attribute \"\(name)\" has no value")
            }
            let value = String(fields[index + 1])
            switch name {
            case "raddr":
                guard IPLiteral.isIPv4(value) || IPLiteral.isIPv6(value) || IPLiteral.isHostName(value) else {
                    throw fail("raddr \"\(value)\" is not an address")
                }
                relatedAddress = value
            case "rport":
                guard let p = Self.parsePort(Substring(value)) else { throw fail("rport \"\(value)\" is not 0-65535") }
                relatedPort = p
            case "tcptype":
                guard let t = TCPType(rawValue: value.lowercased()) else {
                    throw fail("tcptype \"\(value)\" is not active, passive or so")
                }
                tcpType = t
            default:
                guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }) else {
                    throw fail("extension name \"\(name)\" is not a token")
                }
                extensions.append(Extension(name: name, value: value))
            }
            index += 2
        }
        if transport == .tcp, tcpType == nil {
            throw fail("TCP candidate without tcptype (RFC 6544 §4.5)")
        }
        if transport == .udp, tcpType != nil {
            throw fail("tcptype on a UDP candidate")
        }
        self.init(
            foundation: foundation, component: component, transport: transport, priority: priority,
            address: address, port: port, kind: kind, relatedAddress: relatedAddress,
            relatedPort: relatedPort, tcpType: tcpType, extensions: extensions)
    }

    private static func parsePort(_ s: Substring) -> UInt16? {
        guard (1...5).contains(s.count), s.allSatisfy(\.isASCIIDigit) else { return nil }
        return UInt16(s)
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

/// `ice-char = ALPHA / DIGIT / "+" / "/"` (RFC 8839 §5.1).
enum IceChar {
    static func isIceChar(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber || c == "+" || c == "/")
    }
}

/// Syntax checks for addresses in SDP, without resolving anything.
enum IPLiteral {
    static func isIPv4(_ s: String) -> Bool {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in
            (1...3).contains(p.count) && p.allSatisfy(\.isASCIIDigit) && Int(p)! <= 255
        }
    }

    static func isIPv6(_ s: String) -> Bool {
        var text = Substring(s)
        if let pct = text.firstIndex(of: "%") { text = text[..<pct] }  // zone id
        guard text.contains(":"), text.count <= 45 else { return false }
        var groups = text.split(separator: ":", omittingEmptySubsequences: false)
        var width = groups.count
        if let last = groups.last, last.contains(".") {
            guard isIPv4(String(last)) else { return false }
            groups.removeLast()
            width += 1  // an IPv4 tail fills two groups
        }
        let chars = Array(text)
        let doubleColons = zip(chars, chars.dropFirst()).filter { $0 == ":" && $1 == ":" }.count
        guard doubleColons <= 1 else { return false }
        let nonEmpty = groups.filter { !$0.isEmpty }
        guard nonEmpty.allSatisfy({ $0.count <= 4 && $0.allSatisfy(\.isHexDigit) }) else { return false }
        if doubleColons == 1 { return width <= 9 }
        return width == 8 && nonEmpty.count == groups.count
    }

    static func isHostName(_ s: String) -> Bool {
        guard (1...253).contains(s.count), !s.hasPrefix("."), !s.hasPrefix("-") else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }
            && s.contains(where: { $0.isLetter })
    }
}
