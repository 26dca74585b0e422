#include "observability/access_log.h"

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <ctime>

#include <spdlog/spdlog.h>

namespace turnpike::observability {

namespace {

constexpr std::size_t kFlushThreshold = 32 * 1024;
constexpr std::size_t kMaxQueuedBytes = 64 * 1024 * 1024;

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
}

// Empty means "not applicable" (no route, no upstream): logged as null.
void append_json_string_or_null(std::string& out, std::string_view s) {
  if (s.empty())
    out += "null";
  else
    append_json_string(out, s);
}

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.append(buf, end);
}

void append_ms(std::string& out, double ms) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, ms, std::chars_format::fixed, 3);
  (void)ec;
  out.append(buf, end);
}

// RFC 3339 UTC with milliseconds, the second part cached per thread.
void append_timestamp(std::string& out) {
  thread_local std::time_t cached = 0;
  thread_local char prefix[32];
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  if (secs != cached) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    std::strftime(prefix, sizeof prefix, "%Y-%m-%dT%H:%M:%S", &tm);
    cached = secs;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, "\"%s.%03dZ\"", prefix, static_cast<int>(ms));
  out += buf;
}

}  // namespace

std::unique_ptr<AccessLogSink> AccessLogSink::open(const std::string& path, std::string& error) {
  if (path == "stdout") return std::unique_ptr<AccessLogSink>(new AccessLogSink(stdout, false));
  if (path == "stderr") return std::unique_ptr<AccessLogSink>(new AccessLogSink(stderr, false));
  std::FILE* f = std::fopen(path.c_str(), "ae");
  if (!f) {
    error = "cannot open access log '" + path + "': " + std::strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<AccessLogSink>(new AccessLogSink(f, true));
}

AccessLogSink::AccessLogSink(std::FILE* f, bool owned) : file_(f), owned_(owned) {
  thread_ = std::thread([this] { run(); });
}

AccessLogSink::~AccessLogSink() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (owned_) std::fclose(file_);
}

void AccessLogSink::submit(std::string&& batch) noexcept {
  if (batch.empty()) return;
  {
    std::lock_guard lock(mu_);
    if (queued_bytes_ + batch.size() > kMaxQueuedBytes) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    queued_bytes_ += batch.size();
    queue_.push_back(std::move(batch));
  }
  cv_.notify_one();
}

void AccessLogSink::flush() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [this] { return queue_.empty() && !writing_; });
}

void AccessLogSink::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty() && stop_) break;
    std::string batch = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= batch.size();
    writing_ = true;
    lock.unlock();
    write_batch(batch);
    lock.lock();
    writing_ = false;
    if (queue_.empty()) idle_cv_.notify_all();
  }
  idle_cv_.notify_all();
}

void AccessLogSink::write_batch(const std::string& batch) noexcept {
  errno = 0;
  const bool ok =
      std::fwrite(batch.data(), 1, batch.size(), file_) == batch.size() && std::fflush(file_) == 0;
  const int err = errno;
  if (ok) {
    if (failing_) spdlog::info("access log: writing again");
    failing_ = false;
    return;
  }
  // E.g. EPIPE once the reader of `access_log: stdout` exits (SIGPIPE is ignored), or ENOSPC:
  // the batch is lost, said once per failing streak rather than per batch.
  std::clearerr(file_);
  dropped_.fetch_add(1, std::memory_order_relaxed);
  if (!failing_)
    spdlog::warn("access log: write failed ({}); dropping lines until a write succeeds",
                 err ? std::strerror(err) : "unknown error");
  failing_ = true;
}

void AccessLogBuffer::append(const AccessRecord& r) {
  if (!sink_) return;
  std::string& o = buf_;
  o += "{\"ts\":";
  append_timestamp(o);
  o += ",\"request_id\":";
  append_json_string(o, r.request_id);
  o += ",\"client\":";
  append_json_string(o, r.client);
  o += ",\"method\":";
  append_json_string(o, r.method);
  o += ",\"path\":";
  append_json_string(o, r.path);
  o += ",\"status\":";
  append_uint(o, static_cast<std::uint64_t>(r.status));
  o += ",\"bytes_in\":";
  append_uint(o, r.bytes_in);
  o += ",\"bytes_out\":";
  append_uint(o, r.bytes_out);
  o += ",\"duration_ms\":";
  append_ms(o, r.duration_ms);
  o += ",\"route\":";
  append_json_string_or_null(o, r.route);
  o += ",\"consumer\":";
  append_json_string_or_null(o, r.consumer);
  o += ",\"cluster\":";
  append_json_string_or_null(o, r.cluster);
  o += ",\"upstream\":";
  append_json_string_or_null(o, r.upstream);
  o += ",\"upstream_ms\":";
  if (r.upstream_ms < 0)
    o += "null";
  else
    append_ms(o, r.upstream_ms);
  o += ",\"upstream_attempts\":";
  o += std::to_string(r.upstream_attempts);
  o += ",\"upstream_failures\":";
  if (r.upstream_failures.empty()) {
    o += "null";
  } else {
    o += '[';
    std::string_view rest = r.upstream_failures;
    for (bool first = true; !rest.empty(); first = false) {
      const auto nl = rest.find('\n');
      if (!first) o += ',';
      append_json_string_or_null(o, rest.substr(0, nl));
      rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    }
    o += ']';
  }
  o += ",\"response_reason\":";
  append_json_string_or_null(o, r.response_reason);
  o += ",\"mirror\":";
  append_json_string_or_null(o, r.mirror);
  o += ",\"request_buffered\":";
  if (r.request_buffered < 0)
    o += "null";
  else
    append_uint(o, static_cast<std::uint64_t>(r.request_buffered));
  o += "}\n";
  if (o.size() >= kFlushThreshold) flush();
}

void AccessLogBuffer::flush() {
  if (!sink_ || buf_.empty()) return;
  std::string batch;
  batch.reserve(kFlushThreshold + 1024);
  batch.swap(buf_);
  sink_->submit(std::move(batch));
}

}  // namespace turnpike::observability
