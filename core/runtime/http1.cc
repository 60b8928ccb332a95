#include "core/runtime/http1.h"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace ringlb::core::runtime::http1 {
namespace {

// RFC 9110 tchar.
bool is_tchar(unsigned char c) {
  if (std::isalnum(c)) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_tchar(c); });
}

// Field values: visible characters, spaces and tabs, and obs-text; no other control bytes.
bool valid_value(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char ch) {
    unsigned char c = static_cast<unsigned char>(ch);
    return c == '\t' || (c >= 0x20 && c != 0x7F);
  });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

ParseResult fail(ParseStatus status, std::string error) {
  ParseResult r;
  r.status = status;
  r.error = std::move(error);
  return r;
}

// The request line: METHOD SP TARGET SP HTTP/1.x (single spaces, origin-form target).
bool parse_request_line(std::string_view line, Request& req, ParseResult& err) {
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    err = fail(ParseStatus::kBad, "malformed request line");
    return false;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) {
    err = fail(ParseStatus::kBad, "malformed method");
    return false;
  }
  bool target_ok = !target.empty() && target.front() == '/' &&
                   std::all_of(target.begin(), target.end(), [](char ch) {
                     unsigned char c = static_cast<unsigned char>(ch);
                     return c > 0x20 && c < 0x7F;
                   });
  if (!target_ok) {
    err = fail(ParseStatus::kBad, "malformed request target (expected a path like /metrics)");
    return false;
  }
  if (version.size() != 8 || !version.starts_with("HTTP/") || !std::isdigit(version[5]) ||
      version[6] != '.' || !std::isdigit(version[7])) {
    err = fail(ParseStatus::kBad, "malformed HTTP version");
    return false;
  }
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
    err = fail(ParseStatus::kVersion, "only HTTP/1.0 and HTTP/1.1 are served here");
    return false;
  }
  req.method = std::string(method);
  req.target = std::string(target);
  size_t q = target.find('?');
  req.path = std::string(target.substr(0, q));
  req.query = q == std::string_view::npos ? "" : std::string(target.substr(q + 1));
  req.minor = version[7] - '0';
  req.keep_alive = req.minor == 1;
  return true;
}

// One header line: "Name: value" -> lower-cased name, trimmed value. nullptr, or the problem.
const char* split_field(std::string_view line, std::string& name, std::string_view& value) {
  size_t colon = line.find(':');
  if (line.empty() || line.front() == ' ' || line.front() == '\t') {
    return "malformed header line (obsolete line folding?)";
  }
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
    return "malformed header line";
  }
  value = trim(line.substr(colon + 1));
  if (!valid_value(value)) return "invalid character in a header value";
  name = lower(line.substr(0, colon));
  return nullptr;
}

// Headers between the request line and the blank line; fills content_length (or -1).
bool parse_headers(std::string_view head, Request& req, int64_t& content_length, ParseResult& err) {
  content_length = -1;
  while (!head.empty()) {
    size_t eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol == std::string_view::npos ? head.size() : eol + 2);
    std::string name;
    std::string_view value;
    if (const char* problem = split_field(line, name, value)) {
      err = fail(ParseStatus::kBad, problem);
      return false;
    }
    if (name == "content-length") {
      int64_t n = -1;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      bool digits = !value.empty() && value.front() != '-' && value.front() != '+';
      if (ec != std::errc() || p != value.data() + value.size() || !digits ||
          (content_length >= 0 && n != content_length)) {
        err = fail(ParseStatus::kBad, "invalid Content-Length");
        return false;
      }
      content_length = n;
    } else if (name == "transfer-encoding") {
      err = fail(ParseStatus::kNotImplemented,
                 "Transfer-Encoding is not supported here; send a Content-Length");
      return false;
    } else if (name == "connection") {
      std::string v = lower(value);
      if (v.find("close") != std::string::npos) req.keep_alive = false;
      if (v.find("keep-alive") != std::string::npos && req.minor == 0) req.keep_alive = true;
    }
    req.headers.emplace_back(std::move(name), std::string(value));
  }
  return true;
}

}  // namespace

const std::string* Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

ParseResult parse_request(std::string_view buf, size_t max_head, size_t max_body) {
  // Robustness (RFC 9112 2.2): empty lines before a request line are skipped.
  size_t start = 0;
  while (buf.substr(start).starts_with("\r\n")) start += 2;
  size_t end = buf.find("\r\n\r\n", start);
  if (end == std::string_view::npos) {
    if (buf.size() - start > max_head) {
      return fail(ParseStatus::kHeadTooLarge, "request line and headers over the limit");
    }
    // A bare LF where CRLF belongs would otherwise wait for a terminator that never comes.
    size_t lf = buf.find('\n', start);
    if (lf != std::string_view::npos && (lf == start || buf[lf - 1] != '\r')) {
      return fail(ParseStatus::kBad, "lines must end in CRLF");
    }
    return {};
  }
  size_t head_len = end + 4 - start;
  if (head_len > max_head) {
    return fail(ParseStatus::kHeadTooLarge, "request line and headers over the limit");
  }
  std::string_view head = buf.substr(start, end - start);
  if (head.find('\n') != std::string_view::npos) {
    // Every LF inside must be part of a CRLF.
    for (size_t i = 0; i < head.size(); ++i) {
      if (head[i] == '\n' && (i == 0 || head[i - 1] != '\r')) {
        return fail(ParseStatus::kBad, "lines must end in CRLF");
      }
      if (head[i] == '\r' && (i + 1 >= head.size() || head[i + 1] != '\n')) {
        return fail(ParseStatus::kBad, "stray CR in the request head");
      }
    }
  }
  ParseResult r;
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  if (!parse_request_line(line, r.request, r)) return r;
  int64_t content_length = -1;
  std::string_view fields = eol == std::string_view::npos ? "" : head.substr(eol + 2);
  if (!parse_headers(fields, r.request, content_length, r)) return r;
  if (r.request.minor == 1 && r.request.header("host") == nullptr) {
    return fail(ParseStatus::kBad, "HTTP/1.1 request without Host");
  }
  size_t body_len = content_length < 0 ? 0 : static_cast<size_t>(content_length);
  if (content_length > 0 && static_cast<uint64_t>(content_length) > max_body) {
    return fail(ParseStatus::kBodyTooLarge, "request body over the limit");
  }
  size_t body_at = end + 4;
  if (buf.size() - body_at < body_len) return {};  // the body is still on its way
  r.request.body = std::string(buf.substr(body_at, body_len));
  r.consumed = body_at + body_len;
  r.status = ParseStatus::kDone;
  return r;
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

int status_for(ParseStatus s) {
  switch (s) {
    case ParseStatus::kHeadTooLarge:
      return 431;
    case ParseStatus::kBodyTooLarge:
      return 413;
    case ParseStatus::kVersion:
      return 505;
    case ParseStatus::kNotImplemented:
      return 501;
    default:
      return 400;
  }
}

std::string response(int status, std::string_view content_type, std::string_view body,
                     bool keep_alive, std::string_view extra, bool head_only) {
  std::string out;
  out.reserve(160 + extra.size() + (head_only ? 0 : body.size()));
  out += "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out += reason_phrase(status);
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += keep_alive ? "\r\nConnection: keep-alive\r\n" : "\r\nConnection: close\r\n";
  out += "Cache-Control: no-store\r\n";
  out += extra;
  out += "\r\n";
  if (!head_only) out += body;
  return out;
}

namespace {

ResponseResult bad_response(std::string error) {
  ResponseResult r;
  r.status = ParseStatus::kBad;
  r.error = std::move(error);
  return r;
}

// "HTTP/1.1 200 OK" (the reason may be empty or absent).
bool parse_status_line(std::string_view line, int& status) {
  if (line.size() < 12 || !line.starts_with("HTTP/1.") || !std::isdigit(line[7]) ||
      line[8] != ' ') {
    return false;
  }
  std::string_view code = line.substr(9, 3);
  if (!std::all_of(code.begin(), code.end(), [](char c) { return std::isdigit(c); })) return false;
  if (line.size() > 12 && line[12] != ' ') return false;
  status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  return status >= 100;
}

// A chunked body from `buf` (just after the head): kIncomplete until the last chunk and the
// trailer section's blank line are in.
ParseStatus dechunk(std::string_view buf, std::string& body, std::string& error) {
  body.clear();
  for (;;) {
    size_t eol = buf.find("\r\n");
    if (eol == std::string_view::npos) return ParseStatus::kIncomplete;
    std::string_view line = buf.substr(0, eol);
    std::string_view size_text = trim(line.substr(0, line.find(';')));  // extensions ignored
    uint64_t size = 0;
    auto [p, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
    if (size_text.empty() || ec != std::errc() || p != size_text.data() + size_text.size()) {
      error = "malformed chunk size";
      return ParseStatus::kBad;
    }
    buf.remove_prefix(eol + 2);
    if (size == 0) break;
    if (buf.size() < size + 2) return ParseStatus::kIncomplete;
    if (buf.substr(size, 2) != "\r\n") {
      error = "chunk data not followed by CRLF";
      return ParseStatus::kBad;
    }
    body.append(buf.substr(0, size));
    buf.remove_prefix(size + 2);
  }
  // Trailer fields (ignored) up to a blank line.
  for (;;) {
    size_t eol = buf.find("\r\n");
    if (eol == std::string_view::npos) return ParseStatus::kIncomplete;
    buf.remove_prefix(eol + 2);
    if (eol == 0) return ParseStatus::kDone;
  }
}

}  // namespace

const std::string* Response::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

ResponseResult parse_response(std::string_view buf, bool eof) {
  size_t end = buf.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    return eof ? bad_response("the answer ended inside its headers") : ResponseResult{};
  }
  std::string_view head = buf.substr(0, end);
  std::string_view rest = buf.substr(end + 4);
  ResponseResult r;
  size_t eol = head.find("\r\n");
  if (!parse_status_line(head.substr(0, eol), r.response.status)) {
    return bad_response("malformed status line");
  }
  if (r.response.status < 200) return parse_response(rest, eof);  // 1xx: the real one follows
  int64_t content_length = -1;
  bool chunked = false;
  std::string_view fields = eol == std::string_view::npos ? "" : head.substr(eol + 2);
  while (!fields.empty()) {
    size_t e = fields.find("\r\n");
    std::string_view line = fields.substr(0, e);
    fields.remove_prefix(e == std::string_view::npos ? fields.size() : e + 2);
    std::string name;
    std::string_view value;
    if (const char* problem = split_field(line, name, value)) return bad_response(problem);
    if (name == "content-length") {
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), content_length);
      if (value.empty() || ec != std::errc() || p != value.data() + value.size() ||
          content_length < 0) {
        return bad_response("invalid Content-Length");
      }
    } else if (name == "transfer-encoding") {
      chunked = lower(value).find("chunked") != std::string::npos;
    }
    r.response.headers.emplace_back(std::move(name), std::string(value));
  }
  const int status = r.response.status;
  if (status == 204 || status == 304) {
    r.status = ParseStatus::kDone;
  } else if (chunked) {
    r.status = dechunk(rest, r.response.body, r.error);
  } else if (content_length >= 0) {
    if (rest.size() >= static_cast<uint64_t>(content_length)) {
      r.response.body = std::string(rest.substr(0, static_cast<size_t>(content_length)));
      r.status = ParseStatus::kDone;
    }
  } else if (eof) {
    r.response.body = std::string(rest);  // delimited by the close
    r.status = ParseStatus::kDone;
  }
  if (r.status == ParseStatus::kIncomplete && eof) return bad_response("the answer was cut short");
  return r;
}

std::optional<std::string_view> query_param(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) == key) {
      return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    }
  }
  return std::nullopt;
}

}  // namespace ringlb::core::runtime::http1
