// pcb_inspect: inspect PCB images with a model package on Paddle Lite's light API (MobileConfig and
// the package's .nb), the C++ counterpart of `inspector predict` for ARM Linux boxes without Python.
//
//   pcb_inspect --model PACKAGE_DIR [--template GOLDEN] [--threads N] [--power-mode high|low|full|no_bind]
//               [--runs N] [--warmup N] [--score-threshold T] IMAGE...
//
// Per image, one JSON line on stdout: {"image", "template", "image_size", "detections", "timing_ms",
// "alignment", ...} (the keys of the Python runtime's Detections.to_dict(), boxes in the image's
// pixels). With --runs N > 1 the image is detected N times after --warmup untimed runs and the line
// also holds "latency_ms" (p50/p99/mean of whole frames, as `inspector bench` reports them).
// A line {"runtime": ...} first says what runs. Exit status: 0; 1 if some image was not judged;
// 2 for a bad package or bad options.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "manifest.h"
#include "paddle_api.h"
#include "processing.h"

namespace fs = std::filesystem;
using paddle::lite_api::MobileConfig;
using paddle::lite_api::PaddlePredictor;
using paddle::lite_api::PowerMode;

namespace {

// The package target whose .nb this build can run (inspector.runtime.package.lite_target_for_this_machine).
#if defined(__aarch64__) || defined(__arm__)
const char* kLiteTarget = "lite-arm";
#else
const char* kLiteTarget = "lite-x86";
#endif

const char* kUsage =
    "usage: pcb_inspect --model PACKAGE_DIR [--template GOLDEN] [--threads N] "
    "[--power-mode high|low|full|no_bind] [--runs N] [--warmup N] [--score-threshold T] IMAGE...\n"
    "  --template   the golden board for every image (image+template packages); default for DeepPCB-named\n"
    "               X_test.jpg: X_temp.jpg beside it\n"
    "  --threads    CPU threads Paddle Lite uses (default 1)\n"
    "  --power-mode which cores those threads are bound to (default high: the big cores)\n"
    "  --runs       detect each image N times and report latency p50/p99 (default 1)\n"
    "  --warmup     untimed runs before the timed ones (default 0)\n"
    "  --score-threshold  default: the package's (manifest.json postprocess.score_threshold)\n";

class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct Options {
  fs::path model;
  std::string template_path;
  int threads = 1;
  std::string power_mode = "high";
  int runs = 1;
  int warmup = 0;
  double score_threshold = -1;
  std::vector<std::string> images;
};

int parse_count(const std::string& flag, const std::string& value, int minimum) {
  std::size_t used = 0;
  int number = 0;
  try {
    number = std::stoi(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || number < minimum)
    throw UsageError(flag + ": expected an integer >= " + std::to_string(minimum) + ", got '" + value + "'");
  return number;
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (flag.rfind("--", 0) != 0) {
      options.images.push_back(flag);
      continue;
    }
    if (i + 1 >= argc) throw UsageError("option " + flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--model") options.model = value;
    else if (flag == "--template") options.template_path = value;
    else if (flag == "--threads") options.threads = parse_count(flag, value, 1);
    else if (flag == "--power-mode") options.power_mode = value;
    else if (flag == "--runs") options.runs = parse_count(flag, value, 1);
    else if (flag == "--warmup") options.warmup = parse_count(flag, value, 0);
    else if (flag == "--score-threshold") {
      std::size_t used = 0;
      try {
        options.score_threshold = std::stod(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != value.size() || !(options.score_threshold >= 0 && options.score_threshold <= 1))
        throw UsageError("--score-threshold: expected a number in [0, 1], got '" + value + "'");
    } else
      throw UsageError("unknown option " + flag);
  }
  if (options.model.empty()) throw UsageError("--model PACKAGE_DIR is required");
  if (options.images.empty()) throw UsageError("no IMAGE given");
  return options;
}

PowerMode power_mode(const std::string& name) {
  if (name == "high") return PowerMode::LITE_POWER_HIGH;        // bind to the big cores
  if (name == "low") return PowerMode::LITE_POWER_LOW;          // bind to the little cores
  if (name == "full") return PowerMode::LITE_POWER_FULL;        // use every core
  if (name == "no_bind") return PowerMode::LITE_POWER_NO_BIND;  // let the OS schedule
  throw UsageError("--power-mode: expected high, low, full or no_bind, got '" + name + "'");
}

// DeepPCB names a tested image X_test.jpg and its golden template X_temp.jpg (as `inspector predict`).
std::string deeppcb_template(const std::string& image) {
  const fs::path path(image);
  const std::string stem = path.stem().string();
  const std::string suffix = "_test";
  if (stem.size() < suffix.size() || stem.compare(stem.size() - suffix.size(), suffix.size(), suffix) != 0)
    throw std::invalid_argument(image + ": this model needs a golden template; pass --template (only DeepPCB-named "
                                "X_test.jpg images find theirs, X_temp.jpg, on their own)");
  return (path.parent_path() / (stem.substr(0, stem.size() - suffix.size()) + "_temp" + path.extension().string()))
      .string();
}

cv::Mat read_image(const std::string& path) {
  cv::Mat image = cv::imread(path, cv::IMREAD_COLOR);
  if (image.empty()) throw std::invalid_argument(path + ": cannot be read as an image (missing or not an image)");
  return image;
}

// Paddle Lite's predictor as a pcb::Network: copies the input in, runs, checks the output shapes.
class LiteNetwork {
 public:
  LiteNetwork(const pcb::Manifest& manifest, const fs::path& nb_file, int threads, PowerMode mode)
      : manifest_(manifest) {
    MobileConfig config;
    config.set_model_from_file(nb_file.string());
    config.set_threads(threads);
    config.set_power_mode(mode);
    predictor_ = paddle::lite_api::CreatePaddlePredictor<MobileConfig>(config);
    if (!predictor_) throw pcb::PackageError(nb_file.string() + ": Paddle Lite could not load the model");
  }

  std::string version() const { return predictor_->GetVersion(); }

  pcb::NetworkOutputs operator()(const std::vector<float>& input) {
    const auto& spec = manifest_.input;
    const std::int64_t expected = static_cast<std::int64_t>(spec.channels) * spec.size * spec.size;
    if (static_cast<std::int64_t>(input.size()) != expected)
      throw std::logic_error("input tensor has " + std::to_string(input.size()) + " values, expected " +
                             std::to_string(expected));
    std::unique_ptr<paddle::lite_api::Tensor> tensor = predictor_->GetInput(0);
    tensor->Resize({1, spec.channels, spec.size, spec.size});
    std::copy(input.begin(), input.end(), tensor->mutable_data<float>());
    predictor_->Run();
    boxes_ = predictor_->GetOutput(0);
    scores_ = predictor_->GetOutput(1);
    check_shape(*boxes_, manifest_.boxes_shape, "boxes");
    check_shape(*scores_, manifest_.scores_shape, "scores");
    return {boxes_->data<float>(), scores_->data<float>()};
  }

 private:
  void check_shape(const paddle::lite_api::Tensor& tensor, const std::array<std::int64_t, 3>& expected,
                   const char* name) const {
    const auto shape = tensor.shape();
    if (shape.size() != 3 || !std::equal(shape.begin(), shape.end(), expected.begin())) {
      std::string got;
      for (auto dim : shape) got += (got.empty() ? "" : ", ") + std::to_string(dim);
      throw pcb::PackageError(manifest_.source + ": the model's " + name + " output is [" + got +
                              "], the manifest says [" + std::to_string(expected[0]) + ", " +
                              std::to_string(expected[1]) + ", " + std::to_string(expected[2]) + "]");
    }
  }

  const pcb::Manifest& manifest_;
  std::shared_ptr<PaddlePredictor> predictor_;
  std::unique_ptr<const paddle::lite_api::Tensor> boxes_, scores_;  // hold the outputs' memory until the next run
};

// One image: detect (runs times after warmup), the JSON record as `inspector predict` writes it.
nlohmann::json inspect(const std::string& image_path, const std::string& template_path, const pcb::Manifest& manifest,
                       const pcb::Network& network, const pcb::NmsSettings& settings, const Options& options) {
  const cv::Mat image = read_image(image_path);
  cv::Mat golden;
  if (!template_path.empty()) golden = read_image(template_path);
  const cv::Mat* template_image = golden.empty() ? nullptr : &golden;

  for (int i = 0; i < options.warmup; ++i) pcb::detect(manifest, image, template_image, network, settings);
  std::vector<double> totals, infers;
  pcb::FrameResult result;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < options.runs; ++i) {
    const auto before = std::chrono::steady_clock::now();
    result = pcb::detect(manifest, image, template_image, network, settings);
    totals.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - before).count());
    infers.push_back(result.timing.infer_ms);
  }
  const double elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  nlohmann::json record = pcb::to_json(result, manifest.class_names);
  record["image"] = image_path;
  record["template"] = template_path.empty() ? nlohmann::json(nullptr) : nlohmann::json(template_path);
  if (options.runs > 1)
    record["latency_ms"] = {{"runs", options.runs},
                            {"warmup", options.warmup},
                            {"p50_ms", pcb::percentile(totals, 50)},
                            {"p99_ms", pcb::percentile(totals, 99)},
                            {"mean_ms", std::accumulate(totals.begin(), totals.end(), 0.0) / totals.size()},
                            {"fps", options.runs / elapsed_s},
                            {"infer_p50_ms", pcb::percentile(infers, 50)}};
  return record;
}

int run(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  const PowerMode mode = power_mode(options.power_mode);
  const pcb::Manifest manifest = pcb::read_manifest(options.model);
  const std::vector<fs::path> nb_files = pcb::verify_target_files(options.model, manifest, kLiteTarget);
  const pcb::NmsSettings settings = pcb::nms_settings(manifest, options.score_threshold);
  if (!options.template_path.empty() && !manifest.needs_template())
    std::cerr << "note: this model takes no template; --template " << options.template_path << " is not used\n";

  LiteNetwork lite(manifest, nb_files.front(), options.threads, mode);
  const pcb::Network network = [&lite](const std::vector<float>& input) { return lite(input); };
  std::cout << nlohmann::json{{"runtime",
                               {{"engine", "Paddle Lite " + lite.version()},
                                {"target", kLiteTarget},
                                {"model_file", nb_files.front().filename().string()},
                                {"threads", options.threads},
                                {"power_mode", options.power_mode},
                                {"package", options.model.string()},
                                {"package_id", manifest.package_id()},
                                {"package_precision", manifest.precision},
                                {"score_threshold", settings.score_threshold}}}}
                   .dump()
            << std::endl;

  int refused = 0;
  for (const std::string& image : options.images) {
    nlohmann::json record;
    try {
      std::string template_path;
      if (manifest.needs_template())
        template_path = options.template_path.empty() ? deeppcb_template(image) : options.template_path;
      record = inspect(image, template_path, manifest, network, settings, options);
    } catch (const std::invalid_argument& error) {  // this image cannot be judged; the others still can
      ++refused;
      record = {{"image", image}, {"error", error.what()}};
      std::cerr << image << ": not judged: " << error.what() << "\n";
    }
    std::cout << record.dump() << std::endl;
  }
  return refused ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& error) {
    std::cerr << "error: " << error.what() << "\n" << kUsage;
    return 2;
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << std::endl;
    return 2;
  }
}
