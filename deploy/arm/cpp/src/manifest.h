// The model package's manifest.json, read and checked the way inspector/export/manifest.py and
// inspector/runtime/package.py do it, for a runner that has no Python.
//
// Only what a Paddle Lite runner needs is kept; every field it uses is validated, and a bad one
// raises PackageError naming the file, the field and what was expected.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace pcb {

// The newest manifest format this runner reads (inspector.export.manifest.FORMAT_VERSION).
constexpr int kManifestFormatVersion = 1;
constexpr const char* kManifestFile = "manifest.json";

// A model package that cannot be used; the message says which file or field and what was expected.
class PackageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct FileEntry {
  std::string sha256;  // 64 lowercase hex digits
  std::uintmax_t bytes = 0;
};

// How a frame becomes the network input (inspector.export.manifest.InputSpec).
struct InputSpec {
  int size = 0;                 // the network input's side (the letterbox is size * space_to_depth)
  std::string mode;             // "image" | "image+template" | "gray-diff-s2d" | ... (inspector/data/layouts.py)
  int channels = 0;             // 3, 6, 12 or 8
  std::string color = "RGB";    // "RGB": colour planes; "GRAY": grey image, [grey template,] [|difference|]
  int space_to_depth = 1;       // block of the 2x2-style packing into depth (1: none)
  bool needs_template = false;  // derived from the mode
  bool template_plane = false;  // derived from the mode: GRAY layouts feed the grey template as a plane
  bool difference_plane = false;  // derived from the mode: GRAY layouts feed |frame - template| as a plane
  std::string name;             // the program's input name
  double scale = 1.0 / 255.0;   // uint8 -> network value
  int letterbox_pad_value = 0;  // grey level of the letterbox border
};

// Defaults of the NMS that runs after the network (inspector.export.manifest.PostprocessDefaults).
struct PostprocessSpec {
  double score_threshold = 0.0;
  double nms_threshold = 0.33;
  int max_detections = 100;
  std::string nms = "agnostic";  // "hard" (per class) | "agnostic" (across classes) | "matrix"
};

struct Manifest {
  std::string source;  // the manifest.json path, for messages
  std::string name;
  std::string precision;  // "fp32" | "int8"
  std::vector<std::string> class_names;
  InputSpec input;
  PostprocessSpec postprocess;
  std::array<std::int64_t, 3> boxes_shape{};   // [1, K, 4]
  std::array<std::int64_t, 3> scores_shape{};  // [1, K, C]
  std::map<std::string, FileEntry> files;
  std::map<std::string, std::vector<std::string>> targets;  // "lite-arm" -> {"model_arm.nb"}, ...

  bool needs_template() const { return input.needs_template; }
  std::int64_t num_boxes() const { return boxes_shape[1]; }
  std::int64_t num_classes() const { return scores_shape[2]; }
  // sha256 of the sorted "name:sha256\n" lines, first 16 hex digits (Manifest.package_id in Python).
  std::string package_id() const;
};

// Parse and validate the JSON text of a manifest; `source` names it in errors.
Manifest parse_manifest(const std::string& json_text, const std::string& source);

// Read and validate package_dir/manifest.json.
Manifest read_manifest(const std::filesystem::path& package_dir);

// The files of `target` ("lite-arm", "lite-x86", "paddle"), each checked present with the size and
// sha256 the manifest lists, so a truncated or swapped model is refused before Paddle Lite reads it.
std::vector<std::filesystem::path> verify_target_files(const std::filesystem::path& package_dir,
                                                       const Manifest& manifest, const std::string& target);

std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::filesystem::path& path);

}  // namespace pcb
