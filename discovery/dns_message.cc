#include "discovery/dns_message.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cassert>
#include <cctype>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace ringlb::discovery {

namespace {

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxNameWire = 255;  // RFC 1035 3.1: length bytes and the final zero included
constexpr size_t kMaxLabel = 63;
constexpr uint16_t kClassIn = 1;
constexpr uint16_t kTypeOpt = 41;

uint16_t get16(std::span<const uint8_t> m, size_t p) {
  return static_cast<uint16_t>((m[p] << 8) | m[p + 1]);
}

uint32_t get32(std::span<const uint8_t> m, size_t p) {
  return (uint32_t{m[p]} << 24) | (uint32_t{m[p + 1]} << 16) | (uint32_t{m[p + 2]} << 8) |
         uint32_t{m[p + 3]};
}

void append_label(std::string& out, const uint8_t* p, size_t n) {
  // Presentation-form escaping keeps a label that holds a '.' from reading as two labels, and
  // keeps binary bytes out of logs.
  for (size_t i = 0; i < n; ++i) {
    const uint8_t c = p[i];
    if (c == '.' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x21 || c > 0x7e) {
      char buf[5];
      buf[0] = '\\';
      buf[1] = static_cast<char>('0' + c / 100);
      buf[2] = static_cast<char>('0' + c / 10 % 10);
      buf[3] = static_cast<char>('0' + c % 10);
      out.append(buf, 4);
    } else {
      out += static_cast<char>(c);
    }
  }
}

/// Reads the (possibly compressed) name at `pos` and advances `pos` past its in-place bytes.
bool read_name(std::span<const uint8_t> m, size_t& pos, std::string& out, std::string& error) {
  out.clear();
  size_t p = pos;
  // Start of the run of labels being read; every pointer must land strictly before it, so the
  // read position only ever falls back and a loop cannot exist, whatever the message says.
  size_t run_start = p;
  bool jumped = false;
  size_t wire = 1;  // the final zero byte
  while (true) {
    if (p >= m.size()) {
      error = "name runs past the end of the message at offset " + std::to_string(p);
      return false;
    }
    const uint8_t len = m[p];
    if ((len & 0xc0) == 0xc0) {
      if (p + 1 >= m.size()) {
        error = "compression pointer cut off at offset " + std::to_string(p);
        return false;
      }
      const size_t target = (size_t{len & 0x3fu} << 8) | m[p + 1];
      if (target >= run_start) {
        error = "compression pointer at offset " + std::to_string(p) + " to " +
                std::to_string(target) + " does not point backwards (loop or forward reference)";
        return false;
      }
      if (target < kHeaderSize) {
        error = "compression pointer at offset " + std::to_string(p) + " into the header";
        return false;
      }
      if (!jumped) pos = p + 2;
      jumped = true;
      p = target;
      run_start = target;
      continue;
    }
    if ((len & 0xc0) != 0) {
      // 01 and 10 prefixes are the obsolete extended label types, i.e. a length over 63.
      error = "label length " + std::to_string(len) + " over 63 at offset " + std::to_string(p);
      return false;
    }
    if (len == 0) {
      if (!jumped) pos = p + 1;
      return true;
    }
    wire += size_t{len} + 1;
    if (wire > kMaxNameWire) {
      error = "name longer than 255 bytes at offset " + std::to_string(pos);
      return false;
    }
    if (p + 1 + len > m.size()) {
      error = "label runs past the end of the message at offset " + std::to_string(p);
      return false;
    }
    if (!out.empty()) out += '.';
    append_label(out, &m[p + 1], len);
    p += 1 + len;
  }
}

enum class Keep { kYes, kNo };

/// Reads one resource record at `pos`. `keep` says whether it is a record callers care about.
bool read_record(std::span<const uint8_t> m, size_t& pos, DnsRecord& rec, Keep& keep,
                 int& ext_rcode, std::string& error) {
  keep = Keep::kNo;
  if (!read_name(m, pos, rec.name, error)) return false;
  if (m.size() - pos < 10) {
    error = "record header cut off at offset " + std::to_string(pos);
    return false;
  }
  const uint16_t type = get16(m, pos);
  const uint16_t klass = get16(m, pos + 2);
  uint32_t ttl = get32(m, pos + 4);
  const size_t rdlen = get16(m, pos + 8);
  pos += 10;
  if (m.size() - pos < rdlen) {
    error = "rdlength " + std::to_string(rdlen) + " runs past the end of the message at offset " +
            std::to_string(pos);
    return false;
  }
  const size_t rdata = pos;
  const size_t rdata_end = pos + rdlen;
  pos = rdata_end;
  if (type == kTypeOpt) {
    // EDNS (RFC 6891): the TTL field carries the upper 8 bits of the rcode; the class is the
    // sender's UDP size, so this must come before the class check.
    ext_rcode = static_cast<int>(ttl >> 24);
    return true;
  }
  if (klass != kClassIn) return true;
  if (ttl > 0x7fffffffu) ttl = 0;
  rec.ttl = ttl;
  switch (type) {
    case static_cast<uint16_t>(RecordType::kA):
    case static_cast<uint16_t>(RecordType::kAAAA): {
      const size_t want = type == static_cast<uint16_t>(RecordType::kA) ? 4 : 16;
      if (rdlen != want) {
        error = std::string(want == 4 ? "A" : "AAAA") + " record with rdlength " +
                std::to_string(rdlen) + " at offset " + std::to_string(rdata);
        return false;
      }
      rec.type = static_cast<RecordType>(type);
      std::memcpy(rec.addr, &m[rdata], want);
      rec.addr_len = static_cast<uint8_t>(want);
      keep = Keep::kYes;
      return true;
    }
    case static_cast<uint16_t>(RecordType::kSRV): {
      if (rdlen < 7) {
        error = "SRV record with rdlength " + std::to_string(rdlen) + " at offset " +
                std::to_string(rdata);
        return false;
      }
      rec.type = RecordType::kSRV;
      rec.priority = get16(m, rdata);
      rec.weight = get16(m, rdata + 2);
      rec.port = get16(m, rdata + 4);
      size_t p = rdata + 6;
      // RFC 2782 forbids compressing the target, but servers do it; accept pointers and only
      // insist that the in-place part of the name fills the rdata exactly.
      if (!read_name(m, p, rec.target, error)) return false;
      if (p != rdata_end) {
        error =
            "SRV target does not end at the end of its rdata at offset " + std::to_string(rdata);
        return false;
      }
      keep = Keep::kYes;
      return true;
    }
    default:
      return true;
  }
}

/// `s` without its root dot. An escaped dot ("a\\.") is part of the last label and stays.
std::string_view strip_root_dot(std::string_view s) {
  if (s.empty() || s.back() != '.') return s;
  size_t slashes = 0;
  for (size_t i = s.size() - 1; i > 0 && s[i - 1] == '\\'; --i) ++slashes;
  if (slashes % 2 == 0) s.remove_suffix(1);
  return s;
}

/// Lower-case copy without the root dot, for map keys.
std::string fold_name(std::string_view s) {
  std::string out(strip_root_dot(s));
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

lb::Endpoint make_endpoint(const DnsRecord& rec, uint16_t port, uint32_t weight) {
  lb::Endpoint e;
  char text[INET6_ADDRSTRLEN] = {};
  if (rec.addr_len == 4) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    std::memcpy(&sin.sin_addr, rec.addr, 4);
    std::memcpy(&e.addr, &sin, sizeof(sin));
    e.addr_len = sizeof(sin);
    inet_ntop(AF_INET, &sin.sin_addr, text, sizeof(text));
    e.name = std::string(text) + ":" + std::to_string(port);
  } else {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    std::memcpy(&sin6.sin6_addr, rec.addr, 16);
    std::memcpy(&e.addr, &sin6, sizeof(sin6));
    e.addr_len = sizeof(sin6);
    inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof(text));
    e.name = "[" + std::string(text) + "]:" + std::to_string(port);
  }
  e.weight = weight;
  return e;
}

bool is_address(const DnsRecord& r) {
  return (r.type == RecordType::kA && r.addr_len == 4) ||
         (r.type == RecordType::kAAAA && r.addr_len == 16);
}

void put16(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void put32(std::vector<uint8_t>& out, uint32_t v) {
  put16(out, v >> 16);
  put16(out, v & 0xffff);
}

void put_name(std::vector<uint8_t>& out, std::string_view name) {
  // Tools only: a name that cannot be encoded is a bug in the caller.
  std::string label;
  size_t wire = 1;
  auto flush = [&] {
    assert(!label.empty() && label.size() <= kMaxLabel);
    wire += label.size() + 1;
    assert(wire <= kMaxNameWire);
    out.push_back(static_cast<uint8_t>(label.size()));
    out.insert(out.end(), label.begin(), label.end());
    label.clear();
  };
  size_t i = 0;
  while (i < name.size()) {
    const char c = name[i];
    if (c == '\\' && i + 1 < name.size()) {
      if (i + 3 < name.size() && std::isdigit(static_cast<unsigned char>(name[i + 1])) &&
          std::isdigit(static_cast<unsigned char>(name[i + 2])) &&
          std::isdigit(static_cast<unsigned char>(name[i + 3]))) {
        label += static_cast<char>((name[i + 1] - '0') * 100 + (name[i + 2] - '0') * 10 +
                                   (name[i + 3] - '0'));
        i += 4;
      } else {
        label += name[i + 1];
        i += 2;
      }
    } else if (c == '.') {
      if (!label.empty()) flush();
      ++i;
    } else {
      label += c;
      ++i;
    }
  }
  if (!label.empty()) flush();
  out.push_back(0);
}

void put_record(std::vector<uint8_t>& out, const DnsRecord& r) {
  put_name(out, r.name);
  put16(out, static_cast<uint16_t>(r.type));
  put16(out, kClassIn);
  put32(out, r.ttl);
  const size_t len_at = out.size();
  put16(out, 0);
  switch (r.type) {
    case RecordType::kA:
      out.insert(out.end(), r.addr, r.addr + 4);
      break;
    case RecordType::kAAAA:
      out.insert(out.end(), r.addr, r.addr + 16);
      break;
    case RecordType::kSRV:
      put16(out, r.priority);
      put16(out, r.weight);
      put16(out, r.port);
      put_name(out, r.target);
      break;
    default:
      if (!r.target.empty()) put_name(out, r.target);
      break;
  }
  const size_t rdlen = out.size() - len_at - 2;
  out[len_at] = static_cast<uint8_t>(rdlen >> 8);
  out[len_at + 1] = static_cast<uint8_t>(rdlen);
}

}  // namespace

bool same_dns_name(std::string_view a, std::string_view b) {
  return fold_name(a) == fold_name(b);
}

std::optional<DnsAnswer> parse_dns_response(std::span<const uint8_t> msg, std::string& error) {
  if (msg.size() < kHeaderSize) {
    error = "message of " + std::to_string(msg.size()) + " bytes is shorter than a DNS header";
    return std::nullopt;
  }
  const uint16_t flags = get16(msg, 2);
  if ((flags & 0x8000) == 0) {
    error = "message is a query, not a response";
    return std::nullopt;
  }
  DnsAnswer answer;
  answer.id = get16(msg, 0);
  answer.truncated = (flags & 0x0200) != 0;
  const size_t counts[4] = {get16(msg, 4), get16(msg, 6), get16(msg, 8), get16(msg, 10)};
  size_t pos = kHeaderSize;
  std::string name;
  for (size_t i = 0; i < counts[0]; ++i) {
    if (!read_name(msg, pos, name, error)) return std::nullopt;
    if (msg.size() - pos < 4) {
      error = "question cut off at offset " + std::to_string(pos);
      return std::nullopt;
    }
    pos += 4;
    if (i == 0) answer.question = name;
  }
  int ext_rcode = 0;
  for (int section = 1; section < 4; ++section) {
    for (size_t i = 0; i < counts[section]; ++i) {
      DnsRecord rec{};
      Keep keep;
      if (!read_record(msg, pos, rec, keep, ext_rcode, error)) return std::nullopt;
      if (keep == Keep::kNo) continue;
      // The authority section (section 2) only matters for negative caching, which the refresh
      // policy does on its own terms; it is parsed to reach the additional section.
      if (section == 1) answer.answers.push_back(std::move(rec));
      if (section == 3) answer.additional.push_back(std::move(rec));
    }
  }
  answer.rcode = (ext_rcode << 4) | (flags & 0x000f);
  return answer;
}

Resolved endpoints_from_answer(const DnsAnswer& answer, RecordType type, uint16_t port) {
  Resolved out;
  bool have_ttl = false;
  auto use_ttl = [&](uint32_t ttl) {
    out.ttl = have_ttl ? std::min(out.ttl, ttl) : ttl;
    have_ttl = true;
  };
  std::unordered_map<std::string, size_t> index;  // endpoint_key -> position in out.endpoints

  if (type == RecordType::kA || type == RecordType::kAAAA) {
    for (const DnsRecord& r : answer.answers) {
      if (r.type != type || !is_address(r)) continue;
      use_ttl(r.ttl);
      lb::Endpoint e = make_endpoint(r, port, 1);
      // An RRset is a set: a repeated A record is the same backend, not twice the weight.
      if (index.emplace(lb::endpoint_key(e), out.endpoints.size()).second) {
        out.endpoints.push_back(std::move(e));
      }
    }
    return out;
  }
  if (type != RecordType::kSRV) return out;

  std::vector<const DnsRecord*> srvs;
  for (const DnsRecord& r : answer.answers) {
    if (r.type != RecordType::kSRV || r.port == 0 || fold_name(r.target).empty()) continue;
    srvs.push_back(&r);
  }
  if (srvs.empty()) return out;
  const uint16_t lowest =
      (*std::min_element(srvs.begin(), srvs.end(), [](const DnsRecord* a, const DnsRecord* b) {
        return a->priority < b->priority;
      }))->priority;

  // Addresses by folded owner name, from both sections (answer first, then additional).
  std::unordered_map<std::string, std::vector<const DnsRecord*>> addrs;
  for (const auto* section : {&answer.answers, &answer.additional}) {
    for (const DnsRecord& r : *section) {
      if (is_address(r)) addrs[fold_name(r.name)].push_back(&r);
    }
  }

  std::unordered_set<std::string> seen_srv;  // identical SRV records count once
  for (const DnsRecord* s : srvs) {
    if (s->priority != lowest) continue;
    const std::string target = fold_name(s->target);
    std::string srv_key = target;
    srv_key += '\0';
    srv_key += std::to_string(s->port) + "/" + std::to_string(s->weight);
    if (!seen_srv.insert(srv_key).second) continue;
    use_ttl(s->ttl);
    const uint32_t weight = s->weight == 0 ? 1 : s->weight;
    auto it = addrs.find(target);
    if (it == addrs.end()) {
      // Distinct records only (seen_srv), so two records of one target and port with different
      // weights both count, as they do when the addresses came with the answer.
      out.unresolved_srv.push_back({std::string(strip_root_dot(s->target)), s->port, weight});
      continue;
    }
    std::unordered_set<std::string> this_srv;  // a repeated address under one target counts once
    for (const DnsRecord* a : it->second) {
      use_ttl(a->ttl);
      lb::Endpoint e = make_endpoint(*a, s->port, weight);
      std::string key = lb::endpoint_key(e);
      if (!this_srv.insert(key).second) continue;
      auto [pos, fresh] = index.emplace(std::move(key), out.endpoints.size());
      if (fresh) {
        out.endpoints.push_back(std::move(e));
      } else {
        // Two SRV records reaching one address:port: the backend is owed both shares, as
        // make_endpoint_set does for duplicated static entries.
        uint32_t& w = out.endpoints[pos->second].weight;
        w = w > std::numeric_limits<uint32_t>::max() - weight ? std::numeric_limits<uint32_t>::max()
                                                              : w + weight;
      }
    }
  }
  return out;
}

std::vector<uint8_t> build_dns_response(uint16_t id, std::string_view qname, RecordType qtype,
                                        int rcode, const std::vector<DnsRecord>& answers,
                                        const std::vector<DnsRecord>& additional) {
  const bool opt = rcode > 15;
  std::vector<uint8_t> out;
  put16(out, id);
  // QR, RD, RA: what a recursive resolver sends back.
  put16(out, 0x8000u | 0x0100u | 0x0080u | (static_cast<uint32_t>(rcode) & 0x0f));
  put16(out, 1);
  put16(out, static_cast<uint32_t>(answers.size()));
  put16(out, 0);
  put16(out, static_cast<uint32_t>(additional.size() + (opt ? 1 : 0)));
  put_name(out, qname);
  put16(out, static_cast<uint16_t>(qtype));
  put16(out, kClassIn);
  for (const DnsRecord& r : answers) put_record(out, r);
  for (const DnsRecord& r : additional) put_record(out, r);
  if (opt) {
    out.push_back(0);  // root owner name
    put16(out, kTypeOpt);
    put16(out, 1232);  // UDP payload size
    put32(out, (static_cast<uint32_t>(rcode) >> 4) << 24);
    put16(out, 0);
  }
  return out;
}

}  // namespace ringlb::discovery
