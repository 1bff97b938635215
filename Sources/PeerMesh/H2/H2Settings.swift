import NIOCore
import NIOHTTP2

/// HTTP/2 and socket settings shared by the mesh server and client, sized for throughput.
struct H2Tuning: Sendable {
    /// Per-stream flow-control window (SETTINGS_INITIAL_WINDOW_SIZE) and target.
    var streamWindow: Int
    /// Connection-level flow-control window target.
    var connectionWindow: Int
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise.
    var maxConcurrentStreams: Int
    /// SETTINGS_MAX_FRAME_SIZE we advertise: big DATA frames mean fewer frame headers and calls.
    var maxFrameSize = H2Tuning.frameSize
    /// Largest DATA frame we accept, and the largest read from a socket joined to a stream: one
    /// read becomes one DATA frame (the peer advertises the same limit), so reads this size keep
    /// frames, flushes and TLS writes per byte at a minimum.
    static let frameSize = 1 << 19

    init(config: MeshConfig) {
        streamWindow = min(config.windowSize, Int(Int32.max))
        connectionWindow = min(max(2 * config.windowSize, 16 << 20), Int(Int32.max))
        maxConcurrentStreams = config.maxConcurrentStreams
    }

    var connectionConfiguration: NIOHTTP2Handler.ConnectionConfiguration {
        var c = NIOHTTP2Handler.ConnectionConfiguration()
        c.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams),
            HTTP2Setting(parameter: .initialWindowSize, value: streamWindow),
            HTTP2Setting(parameter: .maxFrameSize, value: maxFrameSize),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 16 << 10),
        ]
        c.targetWindowSize = connectionWindow
        // One empty DATA frame carries each half-close.
        c.maximumSequentialEmptyDataFrames = 2
        return c
    }

    var streamConfiguration: NIOHTTP2Handler.StreamConfiguration {
        var s = NIOHTTP2Handler.StreamConfiguration()
        s.targetWindowSize = streamWindow
        // Stream channel writability: how much may wait for flow-control window before the glue
        // stops reading the socket that feeds it (four maximum-size frames, resumes at two).
        s.outboundBufferSizeHighWatermark = 4 * Self.frameSize
        s.outboundBufferSizeLowWatermark = 2 * Self.frameSize
        return s
    }

    /// Options for the TCP socket under a mesh TLS connection: large reads (many TLS records per
    /// syscall) and write-buffer water marks above a few DATA frames, so the connection does
    /// not turn unwritable (which stops every stream's feeding socket) after each frame.
    static func configureConnectionSocket(_ channel: any Channel) throws {
        let options = try channel.syncOptions.unwrap(orError: ChannelError.operationUnsupported)
        try options.setOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
        try options.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 64 << 10, maximum: 1 << 20))
    }

    /// Options for plain sockets joined to streams (destination TCP, socketpair ends): reads up to
    /// one maximum-size DATA frame.
    static func configureByteSocket(_ channel: any Channel) throws {
        let options = try channel.syncOptions.unwrap(orError: ChannelError.operationUnsupported)
        try options.setOption(.allowRemoteHalfClosure, value: true)
        try options.setOption(.writeBufferWaterMark, value: .init(low: 1 << 19, high: 1 << 20))
        try options.setOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 64 << 10, maximum: frameSize))
    }
}

extension Optional {
    func unwrap(orError error: @autoclosure () -> any Error) throws -> Wrapped {
        guard let self else { throw error() }
        return self
    }
}
