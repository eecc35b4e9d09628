// See json_lite.h. Recursive descent; the depth limit bounds the recursion, so a hostile
// file cannot overflow the stack.
#include "json_lite.h"

#include <cstdint>
#include <set>

namespace e3dmm {
namespace json_lite {
namespace {

struct Parser {
  const char* p;
  const char* begin;
  const char* end;
  std::string err;

  bool fail(const std::string& what) {
    if (err.empty()) err = "expected " + what + " at byte " + std::to_string(p - begin);
    return false;
  }
  void ws() {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
  }
  bool lit(const char* s) {
    const char* q = p;
    for (; *s; ++s, ++q)
      if (q >= end || *q != *s) return false;
    p = q;
    return true;
  }
  static void put_utf8(std::string* o, uint32_t c) {
    if (c < 0x80) {
      o->push_back((char)c);
    } else if (c < 0x800) {
      o->push_back((char)(0xC0 | (c >> 6)));
      o->push_back((char)(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      o->push_back((char)(0xE0 | (c >> 12)));
      o->push_back((char)(0x80 | ((c >> 6) & 0x3F)));
      o->push_back((char)(0x80 | (c & 0x3F)));
    } else {
      o->push_back((char)(0xF0 | (c >> 18)));
      o->push_back((char)(0x80 | ((c >> 12) & 0x3F)));
      o->push_back((char)(0x80 | ((c >> 6) & 0x3F)));
      o->push_back((char)(0x80 | (c & 0x3F)));
    }
  }
  bool hex4(uint32_t* v) {
    if (end - p < 4) return fail("4 hex digits");
    *v = 0;
    for (int i = 0; i < 4; ++i, ++p) {
      const char c = *p;
      *v <<= 4;
      if (c >= '0' && c <= '9') *v |= (uint32_t)(c - '0');
      else if (c >= 'a' && c <= 'f') *v |= (uint32_t)(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') *v |= (uint32_t)(c - 'A' + 10);
      else return fail("a hex digit");
    }
    return true;
  }
  bool string(std::string* o) {
    if (p >= end || *p != '"') return fail("'\"'");
    ++p;
    while (true) {
      if (p >= end) return fail("a closing '\"'");
      const unsigned char c = (unsigned char)*p++;
      if (c == '"') return true;
      if (c < 0x20) return --p, fail("no control characters in a string");
      if (c != '\\') {
        o->push_back((char)c);
        continue;
      }
      if (p >= end) return fail("an escape");
      const char e = *p++;
      switch (e) {
        case '"': o->push_back('"'); break;
        case '\\': o->push_back('\\'); break;
        case '/': o->push_back('/'); break;
        case 'b': o->push_back('\b'); break;
        case 'f': o->push_back('\f'); break;
        case 'n': o->push_back('\n'); break;
        case 'r': o->push_back('\r'); break;
        case 't': o->push_back('\t'); break;
        case 'u': {
          uint32_t c1 = 0;
          if (!hex4(&c1)) return false;
          if (c1 >= 0xDC00 && c1 < 0xE000) return fail("a character, not a lone low surrogate escape");
          if (c1 >= 0xD800 && c1 < 0xDC00) {  // a high surrogate must be followed by a low one
            if (end - p < 2 || p[0] != '\\' || p[1] != 'u') return fail("a \\u low surrogate after a high one");
            p += 2;
            uint32_t c2 = 0;
            if (!hex4(&c2)) return false;
            if (c2 < 0xDC00 || c2 >= 0xE000) return fail("a low surrogate after a high one");
            c1 = 0x10000 + ((c1 - 0xD800) << 10) + (c2 - 0xDC00);
          }
          put_utf8(o, c1);
          break;
        }
        default: --p; return fail("a valid escape");
      }
    }
  }
  // RFC 8259: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?, at most kMaxNumberChars bytes.
  bool number() {
    const char* s = p;
    if (p < end && *p == '-') ++p;
    if (p >= end || *p < '0' || *p > '9') return fail("a value");
    if (*p == '0') {
      ++p;
      if (p < end && *p >= '0' && *p <= '9') return fail("no leading zero in a number");
    } else {
      while (p < end && *p >= '0' && *p <= '9') ++p;
    }
    if (p < end && *p == '.') {
      ++p;
      const char* d = p;
      while (p < end && *p >= '0' && *p <= '9') ++p;
      if (p == d) return fail("digits after '.'");
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
      ++p;
      if (p < end && (*p == '+' || *p == '-')) ++p;
      const char* d = p;
      while (p < end && *p >= '0' && *p <= '9') ++p;
      if (p == d) return fail("exponent digits");
    }
    if (p - s > kMaxNumberChars) {
      p = s;
      return fail("a number of at most " + std::to_string(kMaxNumberChars) + " characters");
    }
    return true;
  }
  // Parses the members of an object whose '{' is consumed; `depth` is the object's own depth.
  // Top-level string and bool members go to `top` when it is not null.
  bool object(int depth, TopLevel* top) {
    std::set<std::string> keys;
    ws();
    if (p < end && *p == '}') return ++p, true;
    while (true) {
      ws();
      const char* key_at = p;
      std::string key, sv;
      char kind = 0;
      bool bv = false;
      if (!string(&key)) return false;
      if (!keys.insert(key).second) {
        p = key_at;
        return fail("no duplicate keys (found a second \"" + key + "\")");
      }
      ws();
      if (p >= end || *p != ':') return fail("':'");
      ++p;
      if (!value(depth, &kind, &sv, &bv)) return false;
      if (top) {
        top->kinds[key] = kind;
        if (kind == 's') top->strings[key] = sv;
        if (kind == 'b') top->bools[key] = bv;
      }
      ws();
      if (p < end && *p == ',') { ++p; continue; }
      if (p < end && *p == '}') return ++p, true;
      return fail("',' or '}'");
    }
  }
  // Parses one value inside a container at depth `depth`; a nested container is depth + 1.
  bool value(int depth, char* kind, std::string* s, bool* b) {
    ws();
    if (p >= end) return fail("a value");
    const char c = *p;
    if (c == '"') {
      *kind = 's';
      return string(s);
    }
    if (c == '{' || c == '[') {
      if (depth + 1 > kMaxDepth) return fail("a nesting depth of at most " + std::to_string(kMaxDepth));
      ++p;
      if (c == '{') {
        *kind = 'o';
        return object(depth + 1, nullptr);
      }
      *kind = 'a';
      ws();
      if (p < end && *p == ']') return ++p, true;
      while (true) {
        std::string sv;
        char k;
        bool bv;
        if (!value(depth + 1, &k, &sv, &bv)) return false;
        ws();
        if (p < end && *p == ',') { ++p; continue; }
        if (p < end && *p == ']') return ++p, true;
        return fail("',' or ']'");
      }
    }
    if (lit("true")) return *kind = 'b', *b = true, true;
    if (lit("false")) return *kind = 'b', *b = false, true;
    if (lit("null")) return *kind = 'z', true;
    *kind = 'n';
    return number();
  }
};

}  // namespace

bool parse_object(const std::string& text, TopLevel* out, std::string* error) {
  Parser ps{text.data(), text.data(), text.data() + text.size(), {}};
  ps.ws();
  bool ok;
  if (ps.p >= ps.end || *ps.p != '{') {
    ok = ps.fail("a JSON object ('{')");
  } else {
    ++ps.p;
    ok = ps.object(1, out);
  }
  if (ok) {
    ps.ws();
    if (ps.p != ps.end) ok = ps.fail("the end of the metadata after the object");
  }
  if (!ok) *error = ps.err;
  return ok;
}

}  // namespace json_lite
}  // namespace e3dmm
