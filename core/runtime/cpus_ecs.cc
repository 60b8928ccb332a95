// The ECS task metadata's task-level Limits.CPU: a JSON scan that finds one number, and the GET
// that fetches the document at start-up.
#include <cstdlib>

#include "core/base/log.h"
#include "core/runtime/cpus.h"
#include "core/runtime/http_get.h"

namespace ringlb::core::runtime {
namespace {

constexpr int64_t kMetadataTimeoutNs = 1'000'000'000;  // start-up waits no longer than this
constexpr int kMaxDepth = 64;

// Just enough JSON (RFC 8259) to walk a document and pick out members: values are skipped,
// strings compared without decoding (the keys looked for have no escapes).
class JsonScan {
 public:
  explicit JsonScan(std::string_view s) : s_(s) {}

  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool peek(char c) {
    ws();
    return i_ < s_.size() && s_[i_] == c;
  }
  bool at_end() {
    ws();
    return i_ == s_.size();
  }
  // A string; `raw` is its text between the quotes, escapes as written.
  bool string(std::string_view* raw) {
    if (!eat('"')) return false;
    size_t start = i_;
    for (; i_ < s_.size(); ++i_) {
      unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '\\') {
        ++i_;
      } else if (c == '"') {
        if (raw != nullptr) *raw = s_.substr(start, i_ - start);
        ++i_;
        return true;
      } else if (c < 0x20) {
        return false;
      }
    }
    return false;
  }
  bool number(double* out) {
    ws();
    size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    auto digits = [&] {
      size_t from = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ > from;
    };
    if (!digits()) return false;
    if (i_ < s_.size() && s_[i_] == '.' && (++i_, !digits())) return false;
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digits()) return false;
    }
    if (out != nullptr)
      *out = std::strtod(std::string(s_.substr(start, i_ - start)).c_str(), nullptr);
    return true;
  }
  bool value(int depth = 0) {
    if (depth > kMaxDepth) return false;
    ws();
    if (i_ >= s_.size()) return false;
    char c = s_[i_];
    if (c == '"') return string(nullptr);
    if (c == '{' || c == '[') {
      const bool object = c == '{';
      ++i_;
      if (eat(object ? '}' : ']')) return true;
      do {
        if (object && !(string(nullptr) && eat(':'))) return false;
        if (!value(depth + 1)) return false;
      } while (eat(','));
      return eat(object ? '}' : ']');
    }
    if (c == '-' || (c >= '0' && c <= '9')) return number(nullptr);
    for (std::string_view word : {"true", "false", "null"}) {
      if (s_.substr(i_, word.size()) == word) {
        i_ += word.size();
        return true;
      }
    }
    return false;
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

}  // namespace

base::Result<std::optional<double>> ecs_task_cpu(std::string_view json) {
  JsonScan j(json);
  auto malformed = [] { return base::fail(std::string("not a JSON object")); };
  if (!j.eat('{')) return malformed();
  std::optional<double> cpu;
  std::string problem;
  if (!j.eat('}')) {
    do {
      std::string_view key;
      if (!j.string(&key) || !j.eat(':')) return malformed();
      if (key != "Limits" || !j.peek('{')) {
        if (!j.value()) return malformed();
        continue;
      }
      j.eat('{');
      if (j.eat('}')) continue;
      do {
        std::string_view inner;
        if (!j.string(&inner) || !j.eat(':')) return malformed();
        double v = 0;
        if (inner != "CPU") {
          if (!j.value()) return malformed();
        } else if (j.number(&v)) {
          cpu = v;
        } else if (!j.value()) {
          return malformed();
        } else {
          problem = "Limits.CPU is not a number";
        }
      } while (j.eat(','));
      if (!j.eat('}')) return malformed();
    } while (j.eat(','));
    if (!j.eat('}')) return malformed();
  }
  if (!j.at_end()) return malformed();
  if (!problem.empty()) return base::fail(problem);
  if (cpu && !(*cpu > 0)) return base::fail("Limits.CPU is not positive");
  return cpu;
}

std::optional<double> ecs_task_cpu_from_env() {
  const char* uri = std::getenv("ECS_CONTAINER_METADATA_URI_V4");
  if (uri == nullptr || *uri == '\0') return std::nullopt;
  std::string task_url = uri;
  while (task_url.ends_with('/')) task_url.pop_back();
  task_url += "/task";
  auto url = parse_http_url(task_url);
  if (!url) {
    LOG_WARN(
        "workers auto: ECS_CONTAINER_METADATA_URI_V4 \"%s\" is not an http:// URL; "
        "the task's CPU limit is not applied",
        uri);
    return std::nullopt;
  }
  auto answer = http_get(url->host, url->port, url->path, kMetadataTimeoutNs);
  if (!answer) {
    LOG_WARN("workers auto: ECS task metadata (%s): %s; the task's CPU limit is not applied",
             task_url.c_str(), answer.error().message.c_str());
    return std::nullopt;
  }
  if (answer->status != 200) {
    LOG_WARN("workers auto: ECS task metadata (%s): HTTP %d; the task's CPU limit is not applied",
             task_url.c_str(), answer->status);
    return std::nullopt;
  }
  auto cpu = ecs_task_cpu(answer->body);
  if (!cpu) {
    LOG_WARN("workers auto: ECS task metadata (%s): %s; the task's CPU limit is not applied",
             task_url.c_str(), cpu.error().message.c_str());
    return std::nullopt;
  }
  if (!*cpu) {
    LOG_INFO("workers auto: ECS task metadata (%s) has no task-level Limits.CPU (no task size)",
             task_url.c_str());
  }
  return *cpu;
}

}  // namespace ringlb::core::runtime
