// pcb_postprocess_check: runs pcb_inspect's whole per-frame path (manifest, letterbox, input tensor,
// score threshold + NMS, boxes back to frame pixels) with the network replaced by outputs saved
// from the Python runtime, so tests/deploy/test_arm_runner.py can compare every step with Python's on a
// machine without Paddle Lite's C++ library.
//
//   pcb_postprocess_check --model DIR --image FRAME [--template GOLDEN] --boxes B.f32 --scores S.f32
//                         [--input-out INPUT.f32] [--score-threshold T] [--max-detections N] [--verify TARGET]
//
// B.f32 / S.f32: raw little-endian float32 (1, K, 4) and (1, K, C), the manifest's output shapes.
// INPUT.f32 receives the (1, C, S, S) float32 tensor the network would have been fed.
// Prints one JSON line: {"package_id", "letterbox": {scale, pad}, "exact": [unrounded detections], "result":
// the Detections.to_dict() form}. --verify checks that target's files' sizes and sha256s first.
// Exit status 0, or 1 with "error: ..." on stderr.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "manifest.h"
#include "processing.h"

namespace {

std::vector<float> read_floats(const std::string& path, std::size_t expected_count) {
  std::ifstream stream(path, std::ios::binary | std::ios::ate);
  if (!stream) throw std::runtime_error(path + ": cannot be opened");
  const std::streamoff bytes = stream.tellg();
  if (bytes != static_cast<std::streamoff>(expected_count * sizeof(float)))
    throw std::runtime_error(path + ": " + std::to_string(bytes) + " bytes; expected " +
                             std::to_string(expected_count * sizeof(float)) + " (" + std::to_string(expected_count) +
                             " float32 values, the manifest's output shape)");
  std::vector<float> values(expected_count);
  stream.seekg(0);
  stream.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(bytes));
  return values;
}

void write_floats(const std::string& path, const std::vector<float>& values) {
  // Written beside the target, then renamed: a reader never sees half a tensor.
  const std::string partial = path + ".partial";
  {
    std::ofstream stream(partial, std::ios::binary | std::ios::trunc);
    stream.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * 4));
    if (!stream) throw std::runtime_error(partial + ": write failed");
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": rename failed");
}

cv::Mat read_image(const std::string& path) {
  cv::Mat image = cv::imread(path, cv::IMREAD_COLOR);
  if (image.empty()) throw std::runtime_error(path + ": cannot be read as an image");
  return image;
}

int run(int argc, char** argv) {
  std::string model, image_path, template_path, boxes_path, scores_path, input_out, verify_target;
  double score_threshold = -1;
  int max_detections = 0;  // 0: the manifest's
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument("option " + flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--model") model = value;
    else if (flag == "--image") image_path = value;
    else if (flag == "--template") template_path = value;
    else if (flag == "--boxes") boxes_path = value;
    else if (flag == "--scores") scores_path = value;
    else if (flag == "--input-out") input_out = value;
    else if (flag == "--score-threshold") score_threshold = std::stod(value);
    else if (flag == "--max-detections") max_detections = std::stoi(value);
    else if (flag == "--verify") verify_target = value;
    else throw std::invalid_argument("unknown option " + flag);
  }
  if (model.empty() || image_path.empty() || boxes_path.empty() || scores_path.empty())
    throw std::invalid_argument("usage: pcb_postprocess_check --model DIR --image FRAME [--template GOLDEN] "
                                "--boxes B.f32 --scores S.f32 [--input-out INPUT.f32] [--score-threshold T] "
                                "[--max-detections N] [--verify TARGET]");

  const pcb::Manifest manifest = pcb::read_manifest(model);
  if (!verify_target.empty()) pcb::verify_target_files(model, manifest, verify_target);
  const std::size_t num_boxes = static_cast<std::size_t>(manifest.num_boxes());
  const std::vector<float> boxes = read_floats(boxes_path, num_boxes * 4);
  const std::vector<float> scores = read_floats(scores_path, num_boxes * static_cast<std::size_t>(manifest.num_classes()));
  const cv::Mat image = read_image(image_path);
  cv::Mat golden;
  if (!template_path.empty()) golden = read_image(template_path);

  const std::size_t input_count = static_cast<std::size_t>(manifest.input.channels) * manifest.input.size *
                                  manifest.input.size;
  pcb::Network saved_outputs = [&](const std::vector<float>& input) {
    if (input.size() != input_count)
      throw std::runtime_error("input tensor has " + std::to_string(input.size()) + " values; expected " +
                               std::to_string(input_count));
    if (!input_out.empty()) write_floats(input_out, input);
    return pcb::NetworkOutputs{boxes.data(), scores.data()};
  };
  pcb::NmsSettings settings = pcb::nms_settings(manifest, score_threshold);
  if (max_detections > 0) settings.max_detections = max_detections;
  const pcb::FrameResult result =
      pcb::detect(manifest, image, golden.empty() ? nullptr : &golden, saved_outputs, settings);

  // The letterbox geometry in network pixels (divided by the layout's space-to-depth block).
  const int block = manifest.input.space_to_depth;
  const pcb::Letterboxed geometry =
      pcb::letterbox(image, manifest.input.size * block, manifest.input.letterbox_pad_value);
  nlohmann::json exact = nlohmann::json::array();
  for (const pcb::Detection& detection : result.detections)
    exact.push_back({{"box", detection.box}, {"score", detection.score}, {"class_id", detection.class_id}});
  nlohmann::json report = {{"package_id", manifest.package_id()},
                           {"letterbox", {{"scale", geometry.scale / block},
                                          {"pad", {static_cast<double>(geometry.pad_x) / block,
                                                   static_cast<double>(geometry.pad_y) / block}}}},
                           {"exact", exact},
                           {"result", pcb::to_json(result, manifest.class_names)}};
  std::cout << report.dump() << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << std::endl;
    return 1;
  }
}
