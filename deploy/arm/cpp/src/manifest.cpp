#include "manifest.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

namespace pcb {
namespace {

using nlohmann::json;

// The input layouts (inspector/data/layouts.py): mode -> what the network is fed.
struct LayoutSpec {
  int channels;
  int block;  // space-to-depth block
  bool needs_template;
  const char* color;
  bool template_plane;    // GRAY layouts: the grey template is a plane of its own
  bool difference_plane;  // GRAY layouts: |frame - template| is a plane of its own
};
const std::map<std::string, LayoutSpec> kInputLayouts = {
    {"image", {3, 1, false, "RGB", false, false}},
    {"image+template", {6, 1, true, "RGB", false, false}},
    {"gray-diff-s2d", {12, 2, true, "GRAY", true, true}},
    {"gray-frame-diff-s2d", {8, 2, true, "GRAY", false, true}},
    {"gray-frame-template-s2d", {8, 2, true, "GRAY", true, false}},
};
const std::set<std::string> kInputModes = [] {
  std::set<std::string> modes;
  for (const auto& entry : kInputLayouts) modes.insert(entry.first);
  return modes;
}();
const std::set<std::string> kNmsMethods = {"hard", "agnostic", "matrix"};
const std::set<std::string> kPrecisions = {"fp32", "int8"};
const std::set<std::string> kTargets = {"paddle", "lite-x86", "lite-arm"};

std::string quoted_list(const std::set<std::string>& values) {
  std::string out = "[";
  for (const auto& value : values) out += (out.size() > 1 ? ", '" : "'") + value + "'";
  return out + "]";
}

// Typed access to one JSON object's fields, with errors naming the field's full path
// (the C++ twin of _Fields in inspector/export/manifest.py).
class Fields {
 public:
  Fields(const json& data, std::string source, std::string prefix = "")
      : data_(data), source_(std::move(source)), prefix_(std::move(prefix)) {
    if (!data_.is_object()) {
      std::string where = prefix_.empty() ? "the manifest" : "field '" + prefix_.substr(0, prefix_.size() - 1) + "'";
      throw PackageError(source_ + ": " + where + ": expected a JSON object, got " + data_.type_name());
    }
  }

  const json& get(const std::string& key, const std::string& expected) const {
    if (!data_.contains(key)) throw fail(key, expected, nullptr, true);
    return data_.at(key);
  }

  Fields section(const std::string& key) const {
    const json& value = get(key, "an object");
    if (!value.is_object()) throw fail(key, "an object", &value);
    return Fields(value, source_, prefix_ + key + ".");
  }

  std::string string(const std::string& key, const std::string& expected) const {
    const json& value = get(key, expected);
    if (!value.is_string()) throw fail(key, expected, &value);
    return value.get<std::string>();
  }

  std::int64_t integer(const std::string& key, std::int64_t minimum,
                       std::int64_t maximum = std::numeric_limits<std::int64_t>::max()) const {
    std::string expected = "an integer >= " + std::to_string(minimum);
    if (maximum != std::numeric_limits<std::int64_t>::max()) expected += " and <= " + std::to_string(maximum);
    const json& value = get(key, expected);
    if (!value.is_number_integer() || value.get<std::int64_t>() < minimum || value.get<std::int64_t>() > maximum)
      throw fail(key, expected, &value);
    return value.get<std::int64_t>();
  }

  double number(const std::string& key, double minimum, double maximum = INFINITY) const {
    std::ostringstream expected;
    expected << "a number in [" << minimum << ", " << (std::isinf(maximum) ? "inf" : std::to_string(maximum)) << "]";
    const json& value = get(key, expected.str());
    if (!value.is_number()) throw fail(key, expected.str(), &value);
    double number = value.get<double>();
    if (!(std::isfinite(number) && number >= minimum && number <= maximum)) throw fail(key, expected.str(), &value);
    return number;
  }

  std::string choice(const std::string& key, const std::set<std::string>& allowed) const {
    std::string expected = "one of " + quoted_list(allowed);
    std::string value = string(key, expected);
    if (!allowed.count(value)) {
      json shown = value;
      throw fail(key, expected, &shown);
    }
    return value;
  }

  PackageError fail(const std::string& key, const std::string& expected, const json* value, bool missing = false) const {
    std::string what = missing ? "is missing" : "is " + (value ? value->dump() : std::string("invalid"));
    return PackageError(source_ + ": field '" + prefix_ + key + "' " + what + "; expected " + expected);
  }

  const json& data() const { return data_; }

 private:
  const json& data_;
  std::string source_;
  std::string prefix_;
};

std::array<std::int64_t, 3> output_shape(const json& outputs, const std::string& output, const std::string& source,
                                         const std::string& last) {
  const json* shape = nullptr;
  if (outputs.contains(output) && outputs.at(output).is_object() && outputs.at(output).contains("shape"))
    shape = &outputs.at(output).at("shape");
  bool valid = shape && shape->is_array() && shape->size() == 3;
  if (valid)
    for (const auto& dim : *shape) valid = valid && dim.is_number_integer();
  if (!valid)
    throw PackageError(source + ": field 'outputs." + output + ".shape': expected [batch, K, " + last + "]");
  return {(*shape)[0].get<std::int64_t>(), (*shape)[1].get<std::int64_t>(), (*shape)[2].get<std::int64_t>()};
}

bool is_lower_hex_sha256(const std::string& text) {
  if (text.size() != 64) return false;
  for (char c : text)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string to_hex(const unsigned char* digest, unsigned int length) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += digits[digest[i] >> 4];
    out += digits[digest[i] & 0xf];
  }
  return out;
}

// Feeds `update` chunks into one SHA-256 (OpenSSL's EVP interface) and returns the hex digest.
template <typename Feed>
std::string sha256_of(Feed&& feed) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!context || EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("OpenSSL could not start a SHA-256 digest");
  feed([&](const void* data, std::size_t size) {
    if (EVP_DigestUpdate(context.get(), data, size) != 1) throw std::runtime_error("OpenSSL SHA-256 update failed");
  });
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(context.get(), digest, &length) != 1) throw std::runtime_error("OpenSSL SHA-256 failed");
  return to_hex(digest, length);
}

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  return sha256_of([&](auto update) { update(bytes.data(), bytes.size()); });
}

std::string sha256_file(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw PackageError(path.string() + ": cannot be opened for reading");
  return sha256_of([&](auto update) {
    std::vector<char> block(1 << 20);
    while (stream.read(block.data(), static_cast<std::streamsize>(block.size())) || stream.gcount() > 0)
      update(block.data(), static_cast<std::size_t>(stream.gcount()));
    if (stream.bad()) throw PackageError(path.string() + ": read error while hashing");
  });
}

std::string Manifest::package_id() const {
  std::string lines;
  for (const auto& [name, entry] : files) lines += name + ":" + entry.sha256 + "\n";  // std::map: sorted by name
  return sha256_hex(lines).substr(0, 16);
}

Manifest parse_manifest(const std::string& json_text, const std::string& source) {
  json data;
  try {
    data = json::parse(json_text);
  } catch (const json::parse_error& error) {
    throw PackageError(source + ": not valid JSON (" + error.what() + ")");
  }
  Fields fields(data, source);
  Manifest manifest;
  manifest.source = source;

  std::int64_t version = fields.integer("format_version", 1);
  if (version > kManifestFormatVersion)
    throw PackageError(source + ": field 'format_version': this runner reads up to version " +
                       std::to_string(kManifestFormatVersion) + ", the package is version " + std::to_string(version) +
                       " (update the runner)");

  const json& class_names = fields.get("class_names", "a non-empty list of class names");
  bool names_ok = class_names.is_array() && !class_names.empty();
  if (names_ok)
    for (const auto& name : class_names) names_ok = names_ok && name.is_string() && !name.get<std::string>().empty();
  if (!names_ok)
    throw PackageError(source + ": field 'class_names': expected a non-empty list of non-empty strings");
  for (const auto& name : class_names) manifest.class_names.push_back(name.get<std::string>());

  Fields input = fields.section("input");
  manifest.input.size = static_cast<int>(input.integer("size", 1, 1 << 15));
  manifest.input.mode = input.choice("mode", kInputModes);
  manifest.input.channels = static_cast<int>(input.integer("channels", 1, 64));
  manifest.input.name = input.string("name", "the program's input name");
  input.choice("layout", {"NCHW"});
  manifest.input.color = input.choice("color", {"RGB", "GRAY"});
  manifest.input.scale = input.number("scale", 0.0);
  manifest.input.letterbox_pad_value = static_cast<int>(input.integer("letterbox_pad_value", 0, 255));
  // Packages written before space-to-depth layouts existed have no such field: 1.
  manifest.input.space_to_depth =
      input.data().contains("space_to_depth") ? static_cast<int>(input.integer("space_to_depth", 1, 16)) : 1;
  const LayoutSpec& layout = kInputLayouts.at(manifest.input.mode);
  manifest.input.needs_template = layout.needs_template;
  manifest.input.template_plane = layout.template_plane;
  manifest.input.difference_plane = layout.difference_plane;
  const std::pair<const char*, std::pair<std::string, std::string>> checks[] = {
      {"channels", {std::to_string(layout.channels), std::to_string(manifest.input.channels)}},
      {"color", {layout.color, manifest.input.color}},
      {"space_to_depth", {std::to_string(layout.block), std::to_string(manifest.input.space_to_depth)}},
  };
  for (const auto& check : checks)
    if (check.second.first != check.second.second)
      throw PackageError(source + ": field 'input." + check.first + "': input mode '" + manifest.input.mode +
                         "' needs " + check.second.first + ", the manifest says " + check.second.second);

  Fields post = fields.section("postprocess");
  manifest.postprocess.score_threshold = post.number("score_threshold", 0.0, 1.0);
  manifest.postprocess.nms_threshold = post.number("nms_threshold", 0.0, 1.0);
  manifest.postprocess.max_detections = static_cast<int>(post.integer("max_detections", 1, 1 << 20));
  manifest.postprocess.nms = post.choice("nms", kNmsMethods);

  const json& files = fields.get("files", "an object of file name -> {sha256, bytes}");
  if (!files.is_object()) throw fields.fail("files", "an object of file name -> {sha256, bytes}", &files);
  for (auto item = files.begin(); item != files.end(); ++item) {
    const std::string& name = item.key();
    const json& entry = item.value();
    Fields entry_fields(entry, source, "files." + name + ".");
    std::string sha = entry_fields.string("sha256", "a 64-digit hex sha256");
    if (!is_lower_hex_sha256(sha))
      throw PackageError(source + ": field 'files." + name + ".sha256': expected 64 lowercase hex digits, got '" +
                         sha + "'");
    if (name.empty() || name == "." || name == ".." || name.find_first_of("/\\") != std::string::npos)
      throw PackageError(source + ": field 'files': '" + name + "' is not a plain file name inside the package");
    manifest.files[name] = FileEntry{sha, static_cast<std::uintmax_t>(entry_fields.integer("bytes", 0))};
  }

  const json& targets = fields.get("targets", "an object of target -> file names");
  if (!targets.is_object()) throw fields.fail("targets", "an object of target -> file names", &targets);
  for (auto item = targets.begin(); item != targets.end(); ++item) {
    const std::string& target = item.key();
    const json& names = item.value();
    if (!kTargets.count(target))
      throw PackageError(source + ": field 'targets': unknown target '" + target + "'; expected some of " +
                         quoted_list(kTargets));
    bool names_valid = names.is_array() && !names.empty();
    if (names_valid)
      for (const auto& file : names) names_valid = names_valid && file.is_string();
    if (!names_valid)
      throw PackageError(source + ": field 'targets." + target + "': expected a non-empty list of file names");
    for (const auto& file : names) {
      std::string file_name = file.get<std::string>();
      if (!manifest.files.count(file_name))
        throw PackageError(source + ": field 'targets." + target + "': '" + file_name + "' not listed under 'files'");
      manifest.targets[target].push_back(file_name);
    }
  }
  if (manifest.targets.empty()) throw PackageError(source + ": field 'targets': the package offers no target");

  const json& outputs = fields.get("outputs", "a description of the outputs");
  if (!outputs.is_object()) throw fields.fail("outputs", "a description of the outputs", &outputs);
  manifest.boxes_shape = output_shape(outputs, "boxes", source, "4");
  manifest.scores_shape = output_shape(outputs, "scores", source, "C");
  if (manifest.scores_shape[2] != static_cast<std::int64_t>(manifest.class_names.size()))
    throw PackageError(source + ": field 'outputs.scores.shape': " + std::to_string(manifest.scores_shape[2]) +
                       " scores per box, but " + std::to_string(manifest.class_names.size()) + " class names");
  // This runner feeds one frame and reads K boxes; say so plainly if a package was exported otherwise.
  if (manifest.boxes_shape[0] != 1 || manifest.boxes_shape[2] != 4 || manifest.boxes_shape[1] < 1)
    throw PackageError(source + ": field 'outputs.boxes.shape': expected [1, K, 4] with K >= 1");
  if (manifest.scores_shape[0] != 1 || manifest.scores_shape[1] != manifest.boxes_shape[1])
    throw PackageError(source + ": field 'outputs.scores.shape': expected [1, K, C] with the boxes' K = " +
                       std::to_string(manifest.boxes_shape[1]));

  manifest.name = fields.string("name", "the package name");
  manifest.precision = fields.choice("precision", kPrecisions);
  return manifest;
}

Manifest read_manifest(const std::filesystem::path& package_dir) {
  std::filesystem::path path = package_dir / kManifestFile;
  if (!std::filesystem::is_directory(package_dir))
    throw PackageError(package_dir.string() + ": no such model package directory");
  if (!std::filesystem::is_regular_file(path))
    throw PackageError(package_dir.string() + ": not a model package (" + kManifestFile + " missing)");
  std::ifstream stream(path, std::ios::binary);
  std::ostringstream text;
  text << stream.rdbuf();
  if (!stream && !stream.eof()) throw PackageError(path.string() + ": unreadable");
  return parse_manifest(text.str(), path.string());
}

std::vector<std::filesystem::path> verify_target_files(const std::filesystem::path& package_dir,
                                                       const Manifest& manifest, const std::string& target) {
  auto offered = manifest.targets.find(target);
  if (offered == manifest.targets.end()) {
    std::string names;
    for (const auto& [name, files] : manifest.targets) names += (names.empty() ? "" : ", ") + name;
    throw PackageError(package_dir.string() + ": the package has no " + target + " model (it offers: " + names +
                       "); re-export it with that target");
  }
  std::vector<std::filesystem::path> paths;
  for (const auto& name : offered->second) {
    const FileEntry& entry = manifest.files.at(name);
    std::filesystem::path file = package_dir / name;
    if (!std::filesystem::is_regular_file(file))
      throw PackageError(package_dir.string() + ": file " + name + " listed in " + kManifestFile + " is missing");
    std::uintmax_t size = std::filesystem::file_size(file);
    if (size != entry.bytes)
      throw PackageError(file.string() + ": " + std::to_string(size) + " bytes, the manifest says " +
                         std::to_string(entry.bytes) + " (" + (size < entry.bytes ? "truncated" : "grown") +
                         ": incomplete copy or wrong file?)");
    if (sha256_file(file) != entry.sha256)
      throw PackageError(file.string() + ": sha256 differs from the manifest's (corrupted, or replaced by another "
                         "file); re-copy the package");
    paths.push_back(file);
  }
  return paths;
}

}  // namespace pcb
