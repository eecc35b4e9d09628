// See json_lite.h. Recursive descent with a depth limit so a hostile file cannot
// overflow the stack.
#include "json_lite.h"

#include <cstdint>

namespace e3dmm {
namespace json_lite {
namespace {

constexpr int kMaxDepth = 64;

struct Parser {
  const char* p;
  const char* begin;
  const char* end;
  std::string err;

  bool fail(const char* what) {
    if (err.empty()) err = std::string("expected ") + what + " at byte " + std::to_string(p - begin);
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
      if (c < 0x20) return fail("no control characters in a string");
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
          if (c1 >= 0xD800 && c1 < 0xDC00 && end - p >= 2 && p[0] == '\\' && p[1] == 'u') {
            p += 2;
            uint32_t c2 = 0;
            if (!hex4(&c2)) return false;
            if (c2 < 0xDC00 || c2 >= 0xE000) return fail("a low surrogate");
            c1 = 0x10000 + ((c1 - 0xD800) << 10) + (c2 - 0xDC00);
          }
          put_utf8(o, c1);
          break;
        }
        default: --p; return fail("a valid escape");
      }
    }
  }
  bool number() {
    const char* s = p;
    if (p < end && *p == '-') ++p;
    const char* d = p;
    while (p < end && *p >= '0' && *p <= '9') ++p;
    if (p == d) return fail("a number");
    if (p < end && *p == '.') {
      ++p;
      d = p;
      while (p < end && *p >= '0' && *p <= '9') ++p;
      if (p == d) return fail("digits after '.'");
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
      ++p;
      if (p < end && (*p == '+' || *p == '-')) ++p;
      d = p;
      while (p < end && *p >= '0' && *p <= '9') ++p;
      if (p == d) return fail("exponent digits");
    }
    return p > s;
  }
  // Parses one value; reports its kind and, for strings and bools, its value.
  bool value(int depth, char* kind, std::string* s, bool* b) {
    if (depth > kMaxDepth) return fail("nesting depth <= 64");
    ws();
    if (p >= end) return fail("a value");
    const char c = *p;
    if (c == '"') {
      *kind = 's';
      return string(s);
    }
    if (c == '{') {
      *kind = 'o';
      ++p;
      ws();
      if (p < end && *p == '}') return ++p, true;
      while (true) {
        ws();
        std::string key, sv;
        char k;
        bool bv;
        if (!string(&key)) return false;
        ws();
        if (p >= end || *p != ':') return fail("':'");
        ++p;
        if (!value(depth + 1, &k, &sv, &bv)) return false;
        ws();
        if (p < end && *p == ',') { ++p; continue; }
        if (p < end && *p == '}') return ++p, true;
        return fail("',' or '}'");
      }
    }
    if (c == '[') {
      *kind = 'a';
      ++p;
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
  if (ps.p >= ps.end || *ps.p != '{') {
    *error = "expected a JSON object ('{') at byte " + std::to_string(ps.p - ps.begin);
    return false;
  }
  ++ps.p;
  ps.ws();
  bool ok = true;
  if (ps.p < ps.end && *ps.p == '}') {
    ++ps.p;
  } else {
    while (true) {
      ps.ws();
      std::string key, sv;
      char kind = 0;
      bool bv = false;
      if (!ps.string(&key)) { ok = false; break; }
      ps.ws();
      if (ps.p >= ps.end || *ps.p != ':') { ok = ps.fail("':'"); break; }
      ++ps.p;
      if (!ps.value(1, &kind, &sv, &bv)) { ok = false; break; }
      out->kinds[key] = kind;
      if (kind == 's') out->strings[key] = sv;
      if (kind == 'b') out->bools[key] = bv;
      ps.ws();
      if (ps.p < ps.end && *ps.p == ',') { ++ps.p; continue; }
      if (ps.p < ps.end && *ps.p == '}') { ++ps.p; break; }
      ok = ps.fail("',' or '}'");
      break;
    }
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
