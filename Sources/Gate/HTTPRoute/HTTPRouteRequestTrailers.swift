/// Request trailers on the way to an HTTP/1.1 backend.
///
/// HTTP/1.1 carries trailer fields only after a chunked body (RFC 9112 §7.1.2); a request
/// forwarded with its `Content-Length` loses them. HTTP/2 clients send trailers as a trailing
/// HEADERS frame after a body whose length they may also have announced, and an HTTP/1.1
/// chunked request is forwarded chunked anyway. So a request that announces trailer fields
/// with `Trailer` (RFC 9110 §6.6.2: a sender SHOULD) is forwarded chunked even when it has a
/// length, its `Content-Length` left out (RFC 9112 §6.2: not both). `TE: trailers` is not such
/// an announcement: it says the client accepts trailers in the *response* (gRPC clients send
/// it on every request). Trailers a request did not announce, after a body with a length, are
/// dropped (finding them would mean holding the whole body back).
enum RequestTrailers {
    /// Whether `fields` announce request trailers (`Trailer`), so that a request with a length
    /// goes to the backend chunked.
    static func announced(_ fields: [HTTPField]) -> Bool {
        for index in fields.indices where HopByHop.named(fields[index].name, "trailer") { return true }
        return false
    }

    /// `fields` without `Content-Length`, for a request whose body is sent chunked.
    static func withoutLength(_ fields: [HTTPField]) -> [HTTPField] {
        fields.filter { !HopByHop.named($0.name, "content-length") }
    }
}
