// A minimal, strict JSON reader for the cache's metadata object: the reader only needs a
// few top-level string and bool values, and the library must not depend on a JSON package.
// It accepts exactly the dialect of docs/model_cache_format.md (RFC 8259, no duplicate keys,
// depth <= kMaxDepth, numbers <= kMaxNumberChars bytes, no lone surrogate escapes), the same
// texts Python's reader (engine/morphable/cache.py) accepts. Nested values are validated and
// skipped; numbers are validated, never converted (no strtod: nothing here depends on the
// C locale). Never recurses deeper than kMaxDepth and never reads past the end.
#pragma once

#include <map>
#include <string>

namespace e3dmm {
namespace json_lite {

constexpr int kMaxDepth = 64;         ///< the top-level object is depth 1
constexpr int kMaxNumberChars = 64;   ///< bytes of one number token

/// Top-level members of a JSON object that are strings or booleans.
struct TopLevel {
  std::map<std::string, std::string> strings;
  std::map<std::string, bool> bools;
  std::map<std::string, char> kinds;  // every key -> 's' string, 'b' bool, 'n' number, 'o' object, 'a' array, 'z' null
};

/// Parses `text` (already checked to be UTF-8) as one JSON object. On failure returns false
/// and sets `error` (what was expected and the byte offset).
bool parse_object(const std::string& text, TopLevel* out, std::string* error);

}  // namespace json_lite
}  // namespace e3dmm
