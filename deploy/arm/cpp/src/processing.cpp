#include "processing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

namespace pcb {
namespace {

double milliseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// A line camera may deliver single-channel frames: grey becomes BGR, as in transforms._as_bgr.
cv::Mat as_bgr(const cv::Mat& image, const char* what) {
  if (image.empty()) throw std::invalid_argument(std::string(what) + ": empty image");
  if (image.depth() != CV_8U)
    throw std::invalid_argument(std::string(what) + ": expected a uint8 BGR or grey image, got OpenCV depth " +
                                std::to_string(image.depth()));
  if (image.channels() == 1) {
    cv::Mat bgr;
    cv::cvtColor(image, bgr, cv::COLOR_GRAY2BGR);
    return bgr;
  }
  if (image.channels() != 3)
    throw std::invalid_argument(std::string(what) + ": expected a BGR (3-channel) or grey image, got " +
                                std::to_string(image.channels()) + " channels");
  return image;
}

// A 3-channel frame whose planes differ: colour, not grey stored as BGR (detector._has_colour).
bool has_colour(const cv::Mat& image) {
  if (image.channels() != 3) return false;
  cv::Mat planes[3], difference;
  cv::split(image, planes);
  cv::absdiff(planes[0], planes[1], difference);
  if (cv::countNonZero(difference)) return true;
  cv::absdiff(planes[0], planes[2], difference);
  return cv::countNonZero(difference) != 0;
}

// box_iou_numpy for one pair, in float32 and in numpy's order of operations.
float iou(const Box& a, const Box& b) {
  float area_a = std::max(a[2] - a[0], 0.f) * std::max(a[3] - a[1], 0.f);
  float area_b = std::max(b[2] - b[0], 0.f) * std::max(b[3] - b[1], 0.f);
  float width = std::max(std::min(a[2], b[2]) - std::max(a[0], b[0]), 0.f);
  float height = std::max(std::min(a[3], b[3]) - std::max(a[1], b[1]), 0.f);
  float inter = width * height;
  float union_area = area_a + area_b - inter;
  return union_area > 0.f ? inter / std::max(union_area, 1e-12f) : 0.f;
}

// Indices 0..n-1 ordered by descending value, ties in index order (numpy's argsort(-v, kind="stable")).
std::vector<std::size_t> order_by_descending(const std::vector<float>& values) {
  std::vector<std::size_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return values[a] > values[b]; });
  return order;
}

// Python's round(value, digits) for the JSON report (ties aside, which only move the last printed digit).
double rounded(double value, int digits) {
  double factor = std::pow(10.0, digits);
  return std::round(value * factor) / factor;
}

}  // namespace

Letterboxed letterbox(const cv::Mat& input, int size, int pad_value) {
  if (size < 1) throw std::invalid_argument("letterbox: size must be >= 1, got " + std::to_string(size));
  cv::Mat image = as_bgr(input, "letterbox");
  const int width = image.cols, height = image.rows;
  Letterboxed out;
  out.scale = std::min(static_cast<double>(size) / width, static_cast<double>(size) / height);
  // std::nearbyint rounds halves to even, like Python's round().
  const int new_width = std::max(1, std::min(size, static_cast<int>(std::nearbyint(width * out.scale))));
  const int new_height = std::max(1, std::min(size, static_cast<int>(std::nearbyint(height * out.scale))));
  cv::Mat resized = image;
  if (new_width != width || new_height != height) {
    // INTER_AREA averages when shrinking, so thin copper traces fade instead of vanishing.
    int interpolation = out.scale < 1 ? cv::INTER_AREA : cv::INTER_LINEAR;
    cv::resize(image, resized, cv::Size(new_width, new_height), 0, 0, interpolation);
  }
  if (new_width == size && new_height == size) {
    out.image = resized;
    return out;
  }
  out.pad_x = (size - new_width) / 2;
  out.pad_y = (size - new_height) / 2;
  out.image = cv::Mat(size, size, CV_8UC3, cv::Scalar::all(pad_value));
  resized.copyTo(out.image(cv::Rect(out.pad_x, out.pad_y, new_width, new_height)));
  return out;
}

std::vector<float> to_input(const cv::Mat& image, const cv::Mat* template_image, float scale) {
  if (image.type() != CV_8UC3) throw std::invalid_argument("to_input: expected a BGR uint8 image");
  if (template_image && (template_image->size() != image.size() || template_image->type() != image.type()))
    throw std::invalid_argument("to_input: the template's size or type differs from the image's");
  const int rows = image.rows, cols = image.cols;
  const std::size_t plane = static_cast<std::size_t>(rows) * cols;
  std::vector<const cv::Mat*> sources = {&image};
  if (template_image) sources.push_back(template_image);
  std::vector<float> out(sources.size() * 3 * plane);
  for (std::size_t source = 0; source < sources.size(); ++source) {
    float* r = out.data() + (source * 3 + 0) * plane;  // BGR -> RGB, HWC -> CHW
    float* g = out.data() + (source * 3 + 1) * plane;
    float* b = out.data() + (source * 3 + 2) * plane;
    for (int y = 0; y < rows; ++y) {
      const cv::Vec3b* row = sources[source]->ptr<cv::Vec3b>(y);
      const std::size_t offset = static_cast<std::size_t>(y) * cols;
      for (int x = 0; x < cols; ++x) {
        b[offset + x] = static_cast<float>(row[x][0]) * scale;
        g[offset + x] = static_cast<float>(row[x][1]) * scale;
        r[offset + x] = static_cast<float>(row[x][2]) * scale;
      }
    }
  }
  return out;
}

std::vector<float> to_input_gray_diff(const cv::Mat& image, const cv::Mat& template_image, int block, float scale,
                                      bool template_plane, bool difference_plane) {
  if (image.type() != CV_8UC3) throw std::invalid_argument("to_input_gray_diff: expected a BGR uint8 image");
  if (template_image.size() != image.size() || template_image.type() != image.type())
    throw std::invalid_argument("to_input_gray_diff: the template's size or type differs from the image's");
  if (block < 1 || image.rows % block || image.cols % block)
    throw std::invalid_argument("to_input_gray_diff: sides " + std::to_string(image.cols) + "x" +
                                std::to_string(image.rows) + " are not divisible by the block " + std::to_string(block));
  cv::Mat planes[3];
  cv::cvtColor(image, planes[0], cv::COLOR_BGR2GRAY);  // OpenCV's luma weights, as the Python side
  cv::cvtColor(template_image, planes[1], cv::COLOR_BGR2GRAY);
  if (difference_plane) cv::absdiff(planes[0], planes[1], planes[2]);
  const int rows = image.rows / block, cols = image.cols / block;
  const std::size_t plane_size = static_cast<std::size_t>(rows) * cols;
  std::vector<const cv::Mat*> fed = {&planes[0]};
  if (template_plane) fed.push_back(&planes[1]);
  if (difference_plane) fed.push_back(&planes[2]);
  std::vector<float> out(fed.size() * block * block * plane_size);
  float* channel = out.data();
  for (const cv::Mat* fed_plane : fed) {
    const cv::Mat& plane = *fed_plane;
    for (int dy = 0; dy < block; ++dy)
      for (int dx = 0; dx < block; ++dx, channel += plane_size)
        for (int y = 0; y < rows; ++y) {
          const std::uint8_t* row = plane.ptr<std::uint8_t>(y * block + dy);
          for (int x = 0; x < cols; ++x) channel[static_cast<std::size_t>(y) * cols + x] = row[x * block + dx] * scale;
        }
  }
  return out;
}

std::vector<float> make_input(const InputSpec& spec, const cv::Mat& image, const cv::Mat* template_image) {
  const float scale = static_cast<float>(spec.scale);
  if (spec.color == "GRAY") {
    if (!template_image) throw std::invalid_argument("input mode '" + spec.mode + "' needs the golden template");
    return to_input_gray_diff(image, *template_image, spec.space_to_depth, scale, spec.template_plane,
                              spec.difference_plane);
  }
  return to_input(image, template_image, scale);
}

std::vector<std::size_t> nms_hard(const std::vector<Box>& boxes, const std::vector<float>& scores,
                                  const std::vector<int>& classes, float iou_threshold, int max_det) {
  if (boxes.size() != scores.size() || boxes.size() != classes.size())
    throw std::invalid_argument("nms_hard: " + std::to_string(boxes.size()) + " boxes, " +
                                std::to_string(scores.size()) + " scores, " + std::to_string(classes.size()) +
                                " classes; expected equal");
  if (boxes.empty() || max_det <= 0) return {};
  // Each class is moved to its own region of the plane, so one greedy pass never lets two classes
  // suppress each other. numpy: offset = float(|boxes|.max()) * 2.0 + 1.0 in double, then the
  // float32 array times that Python float is computed in float32.
  float max_abs = 0.f;
  for (const Box& box : boxes)
    for (float v : box) max_abs = std::max(max_abs, std::fabs(v));
  const float offset = static_cast<float>(static_cast<double>(max_abs) * 2.0 + 1.0);
  std::vector<Box> shifted(boxes.size());
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    const float shift = static_cast<float>(classes[i]) * offset;
    for (int j = 0; j < 4; ++j) shifted[i][j] = boxes[i][j] + shift;
  }
  std::vector<std::size_t> order = order_by_descending(scores);
  std::vector<std::size_t> keep;
  while (!order.empty() && keep.size() < static_cast<std::size_t>(max_det)) {
    const std::size_t best = order.front();
    keep.push_back(best);
    std::vector<std::size_t> rest;
    rest.reserve(order.size());
    for (std::size_t i = 1; i < order.size(); ++i)
      if (iou(shifted[best], shifted[order[i]]) <= iou_threshold) rest.push_back(order[i]);
    order.swap(rest);
  }
  return keep;
}

std::vector<Detection> select_detections(const float* boxes, const float* scores, std::size_t num_boxes,
                                         std::size_t num_classes, const NmsSettings& settings) {
  // Every (box, class) pair above the threshold is a candidate, in row-major order (np.nonzero).
  std::vector<std::size_t> box_index;
  std::vector<int> class_index;
  std::vector<float> candidate_scores;
  for (std::size_t k = 0; k < num_boxes; ++k)
    for (std::size_t c = 0; c < num_classes; ++c) {
      const float score = scores[k * num_classes + c];
      if (score > settings.score_threshold) {
        box_index.push_back(k);
        class_index.push_back(static_cast<int>(c));
        candidate_scores.push_back(score);
      }
    }
  if (candidate_scores.size() > settings.pre_nms_top_k) {
    std::vector<std::size_t> best = order_by_descending(candidate_scores);
    best.resize(settings.pre_nms_top_k);
    std::vector<std::size_t> kept_boxes;
    std::vector<int> kept_classes;
    std::vector<float> kept_scores;
    for (std::size_t i : best) {
      kept_boxes.push_back(box_index[i]);
      kept_classes.push_back(class_index[i]);
      kept_scores.push_back(candidate_scores[i]);
    }
    box_index.swap(kept_boxes);
    class_index.swap(kept_classes);
    candidate_scores.swap(kept_scores);
  }
  std::vector<Box> candidate_boxes(box_index.size());
  for (std::size_t i = 0; i < box_index.size(); ++i)
    for (int j = 0; j < 4; ++j) candidate_boxes[i][j] = boxes[box_index[i] * 4 + j];
  // "agnostic" is the same greedy pass with every candidate in class 0 (numpy: np.zeros_like(class_index)).
  const std::vector<int> nms_classes =
      settings.class_agnostic ? std::vector<int>(class_index.size(), 0) : class_index;
  std::vector<std::size_t> keep =
      nms_hard(candidate_boxes, candidate_scores, nms_classes, settings.nms_threshold, settings.max_detections);
  std::vector<Detection> detections;
  for (std::size_t i : keep) detections.push_back(Detection{candidate_boxes[i], candidate_scores[i], class_index[i]});
  return detections;
}

void unletterbox(std::vector<Detection>& detections, const Letterboxed& letterboxed, int width, int height,
                 int block) {
  // (boxes - pad) / float32(scale), clipped at 0 and at the frame's right and bottom edges; scale and
  // pad are divided by the space-to-depth block in double first, as Detector.detect does.
  const float scale = static_cast<float>(letterboxed.scale / block);
  const float pad_x = static_cast<float>(static_cast<double>(letterboxed.pad_x) / block);
  const float pad_y = static_cast<float>(static_cast<double>(letterboxed.pad_y) / block);
  const float pad[4] = {pad_x, pad_y, pad_x, pad_y};
  const float upper[4] = {static_cast<float>(width), static_cast<float>(height), static_cast<float>(width),
                          static_cast<float>(height)};
  for (Detection& detection : detections)
    for (int j = 0; j < 4; ++j) {
      const float mapped = (detection.box[j] - pad[j]) / scale;
      detection.box[j] = std::min(std::max(mapped, 0.f), upper[j]);
    }
}

NmsSettings nms_settings(const Manifest& manifest, double score_threshold_override) {
  NmsSettings settings;
  // numpy compares float32 scores and IoUs with these thresholds in float32.
  settings.score_threshold = static_cast<float>(score_threshold_override >= 0 ? score_threshold_override
                                                                              : manifest.postprocess.score_threshold);
  settings.nms_threshold = static_cast<float>(manifest.postprocess.nms_threshold);
  settings.max_detections = manifest.postprocess.max_detections;
  settings.class_agnostic = manifest.postprocess.nms == "agnostic";
  return settings;
}

FrameResult detect(const Manifest& manifest, const cv::Mat& image, const cv::Mat* template_image,
                   const Network& network, const NmsSettings& settings) {
  if (manifest.postprocess.nms != "hard" && manifest.postprocess.nms != "agnostic")
    throw PackageError(manifest.source + ": field 'postprocess.nms' is '" + manifest.postprocess.nms +
                       "'; this runner implements the greedy NMS ('hard', per class, or 'agnostic', across "
                       "classes) only: use the Python runtime");
  const auto start = std::chrono::steady_clock::now();
  if (manifest.needs_template() && !template_image)
    throw std::invalid_argument("this model compares each frame with its golden template (input mode "
                                "'" + manifest.input.mode + "'): pass the template image");
  if (!manifest.needs_template() && template_image)
    throw std::invalid_argument("this model looks at the frame alone (input mode 'image'): it takes no template");
  if (template_image && template_image->size() != image.size())
    throw std::invalid_argument("template is " + std::to_string(template_image->cols) + "x" +
                                std::to_string(template_image->rows) + " but the image is " +
                                std::to_string(image.cols) + "x" + std::to_string(image.rows) +
                                ": register the frame to the template first (the Python runtime's --align)");
  if (manifest.input.color == "GRAY")
    for (const cv::Mat* frame : {&image, template_image})
      if (frame && has_colour(*frame))
        throw std::invalid_argument(std::string(frame == &image ? "image" : "template") +
                                    ": this model expects grey frames (input mode '" + manifest.input.mode +
                                    "'), got a colour frame whose channels differ; use a colour model");
  const int block = manifest.input.space_to_depth;
  const int size = manifest.input.size * block, pad_value = manifest.input.letterbox_pad_value;
  Letterboxed frame = letterbox(image, size, pad_value);
  Letterboxed golden;
  if (template_image) golden = letterbox(*template_image, size, pad_value);
  std::vector<float> input = make_input(manifest.input, frame.image, template_image ? &golden.image : nullptr);
  FrameResult result;
  result.timing.preprocess_ms = milliseconds_since(start);

  const auto inferring = std::chrono::steady_clock::now();
  NetworkOutputs outputs = network(input);
  result.timing.infer_ms = milliseconds_since(inferring);

  const auto postprocessing = std::chrono::steady_clock::now();
  result.detections = select_detections(outputs.boxes, outputs.scores, static_cast<std::size_t>(manifest.num_boxes()),
                                        static_cast<std::size_t>(manifest.num_classes()), settings);
  unletterbox(result.detections, frame, image.cols, image.rows, block);
  result.width = image.cols;
  result.height = image.rows;
  result.timing.postprocess_ms = milliseconds_since(postprocessing);
  return result;
}

nlohmann::json to_json(const FrameResult& result, const std::vector<std::string>& class_names) {
  nlohmann::json detections = nlohmann::json::array();
  for (const Detection& detection : result.detections) {
    nlohmann::json box = nlohmann::json::array();
    for (float v : detection.box) box.push_back(rounded(v, 2));
    detections.push_back({{"box", box},
                          {"score", rounded(detection.score, 4)},
                          {"class_id", detection.class_id},
                          {"class_name", class_names.at(static_cast<std::size_t>(detection.class_id))}});
  }
  return {{"image_size", {result.width, result.height}},
          {"detections", detections},
          {"timing_ms",
           {{"preprocess_ms", rounded(result.timing.preprocess_ms, 3)},
            {"infer_ms", rounded(result.timing.infer_ms, 3)},
            {"postprocess_ms", rounded(result.timing.postprocess_ms, 3)}}},
          {"alignment", nullptr}};
}

double percentile(std::vector<double> values, double q) {
  if (values.empty()) throw std::invalid_argument("percentile of no values");
  std::sort(values.begin(), values.end());
  const double position = (values.size() - 1) * q / 100.0;
  const std::size_t below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (values[above] - values[below]) * (position - below);
}

}  // namespace pcb
