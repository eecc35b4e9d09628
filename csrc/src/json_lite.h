// A minimal validating JSON reader for the cache's metadata object: the reader only
// needs a few top-level string and bool values, and the library must not depend on a
// JSON package. Nested values are validated and skipped. Never reads past `end`.
#pragma once

#include <map>
#include <string>

namespace e3dmm {
namespace json_lite {

/// Top-level members of a JSON object that are strings or booleans.
struct TopLevel {
  std::map<std::string, std::string> strings;
  std::map<std::string, bool> bools;
  std::map<std::string, char> kinds;  // every key -> 's' string, 'b' bool, 'n' number, 'o' object, 'a' array, 'z' null
};

/// Parses `text` as one JSON object. On failure returns false and sets `error`
/// (what was expected and the byte offset).
bool parse_object(const std::string& text, TopLevel* out, std::string* error);

}  // namespace json_lite
}  // namespace e3dmm
