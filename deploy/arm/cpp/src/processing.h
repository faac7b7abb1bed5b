// Pre- and post-processing of the PCB defect detector, computed exactly as the Python runtime does:
//   letterbox, to_input      inspector/data/transforms.py
//   select_detections, NMS   inspector/models/nms.py   (score threshold, greedy "hard" / "agnostic" NMS)
//   unletterbox_boxes        inspector/data/transforms.py
//   detect, to_json          inspector/runtime/detector.py (Detector.detect, Detections.to_dict)
// No Paddle Lite here: the network is a callable, so this part builds and is tested on any machine
// (tests/deploy/test_arm_runner.py compares it with the Python runtime on a real board).
//
// Exactness: the float32 arithmetic follows numpy's operation by operation (the same class offset
// trick in NMS, the same float32 IoU), and this library is compiled with -ffp-contract=off so that
// no fused multiply-add (GCC's default on ARM) changes the last bits of an IoU or a box.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <opencv2/core.hpp>

#include "manifest.h"

namespace pcb {

// A frame fitted into the network's square: a pixel (x, y) of the frame lands at
// (x * scale + pad_x, y * scale + pad_y).
struct Letterboxed {
  cv::Mat image;  // size x size, BGR uint8
  double scale = 1.0;
  int pad_x = 0;
  int pad_y = 0;
};

// inspector.data.transforms.letterbox: keep the aspect ratio, INTER_AREA when shrinking,
// INTER_LINEAR when enlarging, centre it on a `pad_value` border. Grey frames become BGR first.
Letterboxed letterbox(const cv::Mat& image, int size, int pad_value);

// inspector.data.transforms.to_input: float32 (C, S, S), RGB planes of `image`, then those of
// `template_image` when given (C = 6), each value uint8 * scale.
std::vector<float> to_input(const cv::Mat& image, const cv::Mat* template_image, float scale);

// inspector.data.transforms.to_input, the GRAY layouts ("gray-diff-s2d", "gray-frame-diff-s2d",
// "gray-frame-template-s2d"): grey image, grey template (if template_plane) and their absolute difference (if
// difference_plane), each packed block x block into depth (channel = plane * block^2 + dy * block + dx), float32
// (12 or 8, S / block, S / block), each value uint8 * scale.
std::vector<float> to_input_gray_diff(const cv::Mat& image, const cv::Mat& template_image, int block, float scale,
                                      bool template_plane, bool difference_plane);

// The network input of the manifest's layout for a letterboxed frame (and template).
std::vector<float> make_input(const InputSpec& spec, const cv::Mat& image, const cv::Mat* template_image);

using Box = std::array<float, 4>;  // x1, y1, x2, y2

struct Detection {
  Box box;
  float score = 0.f;
  int class_id = 0;
};

// inspector.models.nms.nms_numpy: greedy per-class NMS; kept indices, best first, at most max_det.
std::vector<std::size_t> nms_hard(const std::vector<Box>& boxes, const std::vector<float>& scores,
                                  const std::vector<int>& classes, float iou_threshold, int max_det);

struct NmsSettings {
  float score_threshold = 0.05f;
  float nms_threshold = 0.5f;
  int max_detections = 100;
  std::size_t pre_nms_top_k = 1000;
  bool class_agnostic = false;  // method "agnostic": boxes of any class suppress each other
};

// inspector.models.nms.select_detections (method "hard" or "agnostic") on one image's decoded network outputs:
// boxes (K, 4) and scores (K, C), both row-major float32. Detections best first.
std::vector<Detection> select_detections(const float* boxes, const float* scores, std::size_t num_boxes,
                                         std::size_t num_classes, const NmsSettings& settings);

// inspector.data.transforms.unletterbox_boxes: back to frame pixels, clipped to [0, width] x [0, height].
// `block`: the layout's space-to-depth block; the network's pixels are the letterbox's divided by it.
void unletterbox(std::vector<Detection>& detections, const Letterboxed& letterboxed, int width, int height,
                 int block = 1);

// What the network returned for one input: pointers valid until the network runs again.
struct NetworkOutputs {
  const float* boxes = nullptr;   // (1, K, 4)
  const float* scores = nullptr;  // (1, K, C)
};
// Runs the network on one (1, C, S, S) input; throws if its outputs are not the manifest's shapes.
using Network = std::function<NetworkOutputs(const std::vector<float>& input)>;

struct Timing {
  double preprocess_ms = 0;   // letterbox, channel stacking
  double infer_ms = 0;        // the network
  double postprocess_ms = 0;  // NMS and mapping boxes back
  double total_ms() const { return preprocess_ms + infer_ms + postprocess_ms; }
};

struct FrameResult {
  std::vector<Detection> detections;  // in frame pixels, best first
  int width = 0;
  int height = 0;
  Timing timing;
};

// The manifest's postprocess defaults; a negative override keeps the package's threshold.
NmsSettings nms_settings(const Manifest& manifest, double score_threshold_override = -1);

// Detector.detect without alignment: `template_image` is required by image+template packages (same
// size as the frame) and refused by image-only ones; the manifest's NMS must be "hard".
FrameResult detect(const Manifest& manifest, const cv::Mat& image, const cv::Mat* template_image,
                   const Network& network, const NmsSettings& settings);

// Detections.to_dict(): {"image_size", "detections": [{"box", "score", "class_id", "class_name"}],
// "timing_ms", "alignment": null}, boxes rounded to 0.01 px and scores to 1e-4 like Python.
nlohmann::json to_json(const FrameResult& result, const std::vector<std::string>& class_names);

// numpy.percentile(values, q) with its default linear interpolation.
double percentile(std::vector<double> values, double q);

}  // namespace pcb
