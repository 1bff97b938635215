/// The usrsctp notifications a session acts on, decoded from the host-order C structs usrsctp
/// delivers with `MSG_NOTIFICATION` (RFC 6458 §6.1 layouts).
enum SCTPNotification: Equatable {
    /// `struct sctp_assoc_change`.
    struct AssociationChange: Equatable {
        enum State: Equatable { case communicationUp, communicationLost, restart, shutdownComplete, cannotStartAssociation, other }
        var state: State
        var outboundStreams: UInt16
        var inboundStreams: UInt16
    }

    /// `struct sctp_stream_reset_event`.
    struct StreamReset: Equatable {
        var incoming: Bool
        var outgoing: Bool
        var denied: Bool
        var failed: Bool
        var streams: [UInt16]
    }

    case associationChange(AssociationChange)
    case streamReset(StreamReset)
    case streamChange(outbound: UInt16, inbound: UInt16)

    private static let assocChange: UInt16 = 0x0001
    private static let streamResetEvent: UInt16 = 0x0009
    private static let streamChangeEvent: UInt16 = 0x000d

    /// Decodes a notification; nil for types the session ignores or a short buffer.
    init?(_ bytes: [UInt8]) {
        func u16(_ offset: Int) -> UInt16? {
            guard offset + 2 <= bytes.count else { return nil }
            return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8  // host order (little-endian here)
        }
        guard let type = u16(0), let flags = u16(2) else { return nil }
        switch type {
        case Self.assocChange:
            // sac_type, sac_flags, sac_length(4), sac_state, sac_error, sac_outbound_streams, sac_inbound_streams
            guard let state = u16(8), let outbound = u16(12), let inbound = u16(14) else { return nil }
            let decoded: AssociationChange.State
            switch state {
            case 1: decoded = .communicationUp
            case 2: decoded = .communicationLost
            case 3: decoded = .restart
            case 4: decoded = .shutdownComplete
            case 5: decoded = .cannotStartAssociation
            default: decoded = .other
            }
            self = .associationChange(AssociationChange(state: decoded, outboundStreams: outbound, inboundStreams: inbound))
        case Self.streamResetEvent:
            // strreset_type, strreset_flags, strreset_length(4), strreset_assoc_id(4), stream list
            let declared = Int(u16(4) ?? 0) | Int(u16(6) ?? 0) << 16
            let end = min(bytes.count, declared)
            var streams: [UInt16] = []
            var offset = 12
            while offset + 2 <= end, let id = u16(offset) {
                streams.append(id)
                offset += 2
            }
            self = .streamReset(StreamReset(incoming: flags & 0x0001 != 0, outgoing: flags & 0x0002 != 0,
                                            denied: flags & 0x0004 != 0, failed: flags & 0x0008 != 0, streams: streams))
        case Self.streamChangeEvent:
            // strchange_type, strchange_flags, strchange_length(4), strchange_assoc_id(4), instrms, outstrms
            guard let inbound = u16(12), let outbound = u16(14) else { return nil }
            self = .streamChange(outbound: outbound, inbound: inbound)
        default:
            return nil
        }
    }
}
