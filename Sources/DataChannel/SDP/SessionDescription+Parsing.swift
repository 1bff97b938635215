extension SessionDescription {
    /// Transport protocols of a data-channel m-section: RFC 8841 §4 and the legacy draft form.
    private static let dataProtocols: Set<Substring> = ["UDP/DTLS/SCTP", "TCP/DTLS/SCTP", "DTLS/SCTP"]

    /// Parses SDP from Chromium, Firefox, aiortc, pion, libdatachannel or ugate.
    ///
    /// Uses the first `m=application` section with a DTLS/SCTP protocol; session-level
    /// `a=fingerprint`, `a=setup`, `a=ice-ufrag`, `a=ice-pwd` and `a=ice-options` apply unless the
    /// section overrides them. Accepts CRLF or LF line ends, the legacy `DTLS/SCTP 5000` +
    /// `a=sctpmap` form, and inline or trickled (absent) candidates.
    /// - Throws: ``SDPError`` naming the first malformed line or the missing attribute.
    public init(parsing text: String) throws(SDPError) {
        // "\r\n" is one Character in Swift, so split on both forms.
        var lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\r\n" || $0 == "\n" })
        if lines.last?.isEmpty == true { lines.removeLast() }
        guard !lines.isEmpty else { throw SDPError(line: 0, text: "", reason: "empty description") }

        var parser = Parser()
        for (index, line) in lines.enumerated() {
            try parser.consume(line, number: index + 1)
        }
        self = try parser.finish()
    }

    /// Validates a trickled candidate (`a=candidate:…` or `candidate:…`) and returns it as `candidate:…`.
    public static func parseCandidate(_ line: String) throws(SDPError) -> String {
        let value = line.hasPrefix("a=") ? String(line.dropFirst(2)) : line
        guard value.hasPrefix("candidate:"), Parser.isValidCandidate(value.dropFirst("candidate:".count)) else {
            throw SDPError(line: 1, text: line, reason: "not an ICE candidate (RFC 8839 §5.1: foundation component transport priority address port typ type)")
        }
        return value
    }

    private struct Parser {
        /// Attributes that may appear at session level and apply to the data section.
        struct Shared {
            var iceUfrag: String?
            var icePwd: String?
            var iceOptions: [String]?
            var iceLite = false
            var fingerprints: [CertificateFingerprint] = []
            var setup: Setup?
        }

        var session = Shared()
        var media = Shared()
        var sessionID: String?
        var sessionVersion: UInt64 = 0
        var sawVersion = false
        /// 0 before the first m=; then the line number of the current m=.
        var currentSectionLine = 0
        var inDataSection = false
        var dataSectionLine = 0
        var mid: String?
        var sctpPort: UInt16?
        var sctpMapPort: UInt16?
        var legacyFormatPort: UInt16?
        var maxMessageSize: Int?
        /// The value and the ufrag it was bound to (checked against the description's own).
        var maxDatagramSize: (size: Int, ufrag: String)?
        var candidates: [String] = []
        var endOfCandidates = false

        mutating func consume(_ line: Substring, number: Int) throws(SDPError) {
            func fail(_ reason: String) -> SDPError { SDPError(line: number, text: String(line), reason: reason) }
            guard line.count >= 2, let type = line.first, type.isASCII, type.isLetter, type.isLowercase,
                  line[line.index(after: line.startIndex)] == "="
            else { throw fail("expected <type>=<value> with a lower-case letter type") }
            let value = line.dropFirst(2)
            if !sawVersion {
                guard type == "v", value == "0" else { throw fail("the first line must be v=0") }
                sawVersion = true
                return
            }
            switch type {
            case "v":
                throw fail("repeated v= line")
            case "o":
                let fields = value.split(separator: " ")
                guard fields.count == 6, fields[1].allSatisfy(\.isNumber), let version = UInt64(fields[2]) else {
                    throw fail("o= needs <username> <sess-id> <sess-version> <nettype> <addrtype> <address>")
                }
                sessionID = String(fields[1])
                sessionVersion = version
            case "m":
                try beginSection(value, number: number, fail: fail)
            case "c":
                let fields = value.split(separator: " ")
                guard fields.count == 3, fields[0] == "IN", fields[1] == "IP4" || fields[1] == "IP6" else {
                    throw fail("c= needs IN IP4|IP6 <address>")
                }
            case "a":
                try attribute(value, fail: fail)
            default:
                break  // s=, t=, b=, i=, u=, e=, p=, z=, k=, r=: not used for data channels
            }
        }

        mutating func beginSection(_ value: Substring, number: Int, fail: (String) -> SDPError) throws(SDPError) {
            let fields = value.split(separator: " ")
            guard fields.count >= 4, let port = UInt16(fields[1].split(separator: "/").first ?? "") else {
                throw fail("m= needs <media> <port> <proto> <fmt>")
            }
            currentSectionLine = number
            inDataSection = false
            guard dataSectionLine == 0, fields[0] == "application", Self.dataProtocolsContain(fields[2]) else { return }
            guard port != 0 else { throw fail("the data-channel section is rejected (port 0)") }
            inDataSection = true
            dataSectionLine = number
            if fields[2] == "DTLS/SCTP" {
                guard let legacy = UInt16(fields[3]) else { throw fail("legacy DTLS/SCTP needs the SCTP port as format") }
                legacyFormatPort = legacy
            } else if fields[3] != "webrtc-datachannel" {
                throw fail("the format of \(fields[2]) must be webrtc-datachannel")
            }
        }

        static func dataProtocolsContain(_ proto: Substring) -> Bool { SessionDescription.dataProtocols.contains(proto) }

        mutating func attribute(_ value: Substring, fail: (String) -> SDPError) throws(SDPError) {
            let name: Substring, argument: Substring
            if let colon = value.firstIndex(of: ":") {
                name = value[..<colon]
                argument = value[value.index(after: colon)...]
            } else {
                name = value
                argument = ""
            }
            let sessionLevel = currentSectionLine == 0
            guard sessionLevel || inDataSection else { return }  // other m-sections: ignored
            func shared(_ body: (inout Shared) -> Void) {
                if sessionLevel { body(&session) } else { body(&media) }
            }
            switch name {
            case "ice-ufrag":
                guard (4...256).contains(argument.count), argument.allSatisfy(Self.isICEChar) else {
                    throw fail("ice-ufrag must be 4 to 256 ICE characters (RFC 8839 §5.4)")
                }
                shared { $0.iceUfrag = String(argument) }
            case "ice-pwd":
                guard (22...256).contains(argument.count), argument.allSatisfy(Self.isICEChar) else {
                    throw fail("ice-pwd must be 22 to 256 ICE characters (RFC 8839 §5.4)")
                }
                shared { $0.icePwd = String(argument) }
            case "ice-options":
                shared { $0.iceOptions = argument.split(separator: " ").map(String.init) }
            case "ice-lite":
                shared { $0.iceLite = true }
            case "fingerprint":
                guard let fingerprint = CertificateFingerprint(sdpValue: argument), !fingerprint.bytes.isEmpty else {
                    throw fail("fingerprint must be <hash-func> <hex:hex:…> (RFC 8122 §5)")
                }
                shared { $0.fingerprints.append(fingerprint) }
            case "setup":
                guard let setup = Setup(rawValue: String(argument)) else {
                    throw fail("setup must be actpass, active, passive or holdconn")
                }
                shared { $0.setup = setup }
            case "mid" where !sessionLevel:
                guard !argument.isEmpty else { throw fail("empty mid") }
                mid = String(argument)
            case "sctp-port" where !sessionLevel:
                guard let port = UInt16(argument), port > 0 else { throw fail("sctp-port must be 1 to 65535") }
                sctpPort = port
            case "sctpmap" where !sessionLevel:
                let fields = argument.split(separator: " ")
                guard fields.count >= 2, let port = UInt16(fields[0]), fields[1] == "webrtc-datachannel" else {
                    throw fail("sctpmap must be <port> webrtc-datachannel [<streams>]")
                }
                sctpMapPort = port
            case "max-message-size" where !sessionLevel:
                guard let size = Int(argument), size >= 0 else { throw fail("max-message-size must be a non-negative integer") }
                maxMessageSize = size
            case SessionDescription.maxDatagramSizeAttribute[...] where !sessionLevel:
                let fields = argument.split(separator: " ", omittingEmptySubsequences: false)
                guard fields.count == 2, fields[0].allSatisfy({ $0.isASCII && $0.isNumber }), let size = Int(fields[0]),
                      SessionDescription.maxDatagramSizeRange.contains(size),
                      (4...256).contains(fields[1].count), fields[1].allSatisfy(Self.isICEChar) else {
                    let range = SessionDescription.maxDatagramSizeRange
                    throw fail("\(SessionDescription.maxDatagramSizeAttribute) must be <bytes> <ice-ufrag>, bytes from \(range.lowerBound) to \(range.upperBound)")
                }
                maxDatagramSize = (size, String(fields[1]))
            case "candidate" where !sessionLevel:
                guard Self.isValidCandidate(argument) else {
                    throw fail("candidate needs foundation component transport priority address port typ type (RFC 8839 §5.1)")
                }
                candidates.append("candidate:" + argument)
            case "end-of-candidates":
                endOfCandidates = true
            default:
                break  // not understood: dropped, never echoed
            }
        }

        func finish() throws(SDPError) -> SessionDescription {
            guard sawVersion else { throw SDPError(line: 0, text: "", reason: "missing v=0") }
            guard dataSectionLine > 0 else {
                throw SDPError(line: 0, text: "", reason: "no m=application section with UDP/DTLS/SCTP webrtc-datachannel (or legacy DTLS/SCTP)")
            }
            func missing(_ what: String) -> SDPError {
                SDPError(line: dataSectionLine, text: "", reason: "the data-channel section (line \(dataSectionLine)) has no \(what), at session or media level")
            }
            guard let ufrag = media.iceUfrag ?? session.iceUfrag else { throw missing("a=ice-ufrag") }
            guard let pwd = media.icePwd ?? session.icePwd else { throw missing("a=ice-pwd") }
            let fingerprints = media.fingerprints.isEmpty ? session.fingerprints : media.fingerprints
            guard !fingerprints.isEmpty else { throw missing("a=fingerprint") }
            guard let setup = media.setup ?? session.setup else { throw missing("a=setup") }
            return SessionDescription(
                sessionID: sessionID ?? "0", sessionVersion: sessionVersion, iceUfrag: ufrag, icePwd: pwd,
                iceOptions: media.iceOptions ?? session.iceOptions ?? [], iceLite: media.iceLite || session.iceLite,
                fingerprints: fingerprints, setup: setup, mid: mid,
                sctpPort: sctpPort ?? sctpMapPort ?? legacyFormatPort ?? 5000, maxMessageSize: maxMessageSize,
                // Bound to our own ufrag: a stack that copies the offer's unknown attributes into
                // its answer (libdatachannel 0.22 does) echoes the offerer's, and is ignored.
                maxDatagramSize: maxDatagramSize.flatMap { $0.ufrag == ufrag ? $0.size : nil }, candidates: candidates, endOfCandidates: endOfCandidates,
                usedLegacySCTPMap: legacyFormatPort != nil || sctpMapPort != nil)
        }

        static func isICEChar(_ character: Character) -> Bool {
            character.isASCII && (character.isLetter || character.isNumber || character == "+" || character == "/")
        }

        /// `<foundation> <component> <transport> <priority> <address> <port> typ <type> …`.
        static func isValidCandidate(_ value: Substring) -> Bool {
            let fields = value.split(separator: " ")
            return fields.count >= 8 && !fields[0].isEmpty && UInt16(fields[1]) != nil && UInt32(fields[3]) != nil
                && UInt16(fields[5]) != nil && fields[6] == "typ"
        }
    }
}
