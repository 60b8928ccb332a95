#pragma once
// A small, strict HTTP/1.1 request parser and response builder for the admin listener, and the
// response parser of the one-shot GET client (http_get.h). Pure functions over bytes: no I/O, no
// allocation beyond the message they return, so every limit and malformed case is unit-tested
// without sockets. Requests: only what an admin endpoint needs (a request line, headers, a
// Content-Length body; no chunked bodies, no obs-fold, no trailers). Responses: Content-Length,
// chunked or close-delimited bodies, as the servers we GET from (ringlb's admin, the ECS agent)
// send them. Owner: any thread (the control thread and the CLI use it).
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ringlb::core::runtime::http1 {

struct Request {
  std::string method;  // "GET", "POST", ... (case-sensitive, as RFC 9110 says)
  std::string target;  // as sent: "/metrics?x=1"
  std::string path;    // the target up to '?'
  std::string query;   // after '?', without it ("" when none)
  int minor = 1;       // HTTP/1.<minor>
  bool keep_alive = true;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, in order
  std::string body;

  /// The first header named `name` (lower-case), or nullptr.
  const std::string* header(std::string_view name) const;
};

enum class ParseStatus {
  kIncomplete,      // need more bytes (and the bytes so far are within the limits)
  kDone,            // `request` is whole; `consumed` bytes belong to it
  kBad,             // 400: malformed; `error` says what
  kHeadTooLarge,    // 431: request line and headers over max_head bytes
  kBodyTooLarge,    // 413: Content-Length over max_body
  kVersion,         // 505: not HTTP/1.0 or HTTP/1.1
  kNotImplemented,  // 501: a Transfer-Encoding (chunked bodies are not supported)
};

struct ParseResult {
  ParseStatus status = ParseStatus::kIncomplete;
  size_t consumed = 0;
  Request request;
  std::string error;  // for the 4xx/5xx body
};

/// Parses one request from the start of `buf`. Limits: the request line and headers (through
/// the blank line) at most `max_head` bytes; the body at most `max_body`. A head that is over
/// the limit is reported as soon as that is certain, even before it is complete.
ParseResult parse_request(std::string_view buf, size_t max_head, size_t max_body);

/// The HTTP status code's reason phrase ("Not Found"); "Unknown" for codes it does not know.
const char* reason_phrase(int status);
/// The HTTP status a parse failure is answered with (400, 413, 431, 501, 505).
int status_for(ParseStatus s);

/// A whole response: status line, Content-Type, Content-Length, Connection (close or
/// keep-alive), any `extra` header lines ("Allow: GET\r\n" each with its CRLF), then the body.
/// HEAD responses keep Content-Length and leave out the body (`head_only`).
std::string response(int status, std::string_view content_type, std::string_view body,
                     bool keep_alive, std::string_view extra = {}, bool head_only = false);

/// A response as a client reads it.
struct Response {
  int status = 0;                                            // 200, 503, ...
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, in order
  std::string body;                                          // de-chunked

  /// The first header named `name` (lower-case), or nullptr.
  const std::string* header(std::string_view name) const;
};

struct ResponseResult {
  ParseStatus status = ParseStatus::kIncomplete;  // kIncomplete, kDone or kBad
  Response response;
  std::string error;  // kBad: what was wrong
};

/// Parses the response to a GET sent with `Connection: close`. `eof`: the server has closed, so
/// a body with neither Content-Length nor chunking ends here, and a message still incomplete was
/// cut short (kBad). 1xx interim responses are skipped; 204 and 304 have no body. Bytes after a
/// whole message are ignored.
ResponseResult parse_response(std::string_view buf, bool eof);

/// `key`'s value in a query string "a=1&b=2" (no percent-decoding: admin keys and values are
/// plain), or nullopt when absent.
std::optional<std::string_view> query_param(std::string_view query, std::string_view key);

}  // namespace ringlb::core::runtime::http1
