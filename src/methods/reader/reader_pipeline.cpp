#include "methods/reader/reader_pipeline.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/generate.h"
#include "core/torch_pch.h"
#include "core/transformer.h"
#include "data/records.h"
#include "methods/reader/reranker.h"
#include "modules/trainable_module.h"
#include "retrieval/passage_index.h"
#include "retrieval/rank_fusion.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm {

using nlohmann::json;

json ReaderOptions::to_json() const {
  return {{"index", index}, {"retrieval", retrieval}, {"dense_projection", dense_projection}, {"candidates", candidates}, {"rerank", rerank}, {"reranker", reranker},
          {"input", input}, {"max_new_tokens", max_new_tokens}, {"reader_tokens", reader_tokens}, {"reader_prefix", reader_prefix},
          {"pack", {{"separator", pack.separator}, {"passage_format", pack.passage_format}, {"max_passages", pack.max_passages},
                    {"order", pack.best_last ? "best_last" : "best_first"}}}};
}

ReaderOptions ReaderOptions::from_json(const json& j, const std::string& where) {
  ReaderOptions o;
  try {
    o.index = j.at("index").get<std::string>();
    o.retrieval = j.at("retrieval").get<std::string>();
    o.dense_projection = j.value("dense_projection", false);
    o.candidates = j.at("candidates").get<int64_t>();
    o.rerank = j.at("rerank").get<std::string>();
    o.reranker = j.value("reranker", "");
    o.input = j.at("input").get<std::string>();
    o.max_new_tokens = j.at("max_new_tokens").get<int64_t>();
    o.reader_prefix = j.value("reader_prefix", int64_t(0));
    o.reader_tokens = j.value("reader_tokens", int64_t(0));
    o.pack.separator = j.at("pack").at("separator").get<std::string>();
    o.pack.passage_format = j.at("pack").at("passage_format").get<std::string>();
    o.pack.max_passages = j.at("pack").value("max_passages", int64_t(0));  // (reader.json files older than these two)
    const std::string order = j.at("pack").value("order", std::string("best_first"));
    if (order != "best_first" && order != "best_last") throw Error(where + ": pack.order must be best_first or best_last (not '" + order + "')");
    o.pack.best_last = order == "best_last";
  } catch (const json::exception& e) {
    throw Error(where + ": bad reader options (" + e.what() + ")");
  }
  return o;
}

static void check(const ReaderOptions& o) {
  if (o.retrieval != "bm25" && o.retrieval != "dense" && o.retrieval != "hybrid")
    throw Error("reader: retrieval must be bm25, dense or hybrid (not '" + o.retrieval + "')");
  if (o.rerank != "none" && o.rerank != "lm" && o.rerank != "trained")
    throw Error("reader: rerank must be none, lm or trained (not '" + o.rerank + "')");
  if (o.rerank == "trained" && o.reranker.empty()) throw Error("reader: rerank = trained needs the re-ranker module's directory");
  if (o.candidates < 1) throw Error("reader: candidates must be >= 1");
  if (o.dense_projection && o.retrieval == "bm25") throw Error("reader: the dense projection needs retrieval dense or hybrid (not bm25)");
  const auto fields = template_fields(o.input, "reader input");
  for (const char* f : {"context", "question"})
    if (std::find(fields.begin(), fields.end(), f) == fields.end())
      throw Error("reader input template must contain {" + std::string(f) + "}: " + o.input);
}

ReaderPipeline::ReaderPipeline(const FrozenLM& lm, const Tokenizer& tok, ReaderOptions opt, const TrainableModule* reader)
    : lm_(lm), tok_(tok), opt_(std::move(opt)), reader_(reader) {
  check(opt_);
  bm25_params_ = read_index_manifest(opt_.index).bm25;  // names a missing or damaged index now, not at the first question
  bm25_ = std::make_unique<Bm25Searcher>(std::vector<std::string>{opt_.index + "/bm25"});
  if (opt_.retrieval != "bm25") dense_ = std::make_unique<DenseSearcher>(opt_.index, lm_, opt_.dense_projection);
  if (opt_.rerank == "trained") {
    reranker_input_ = reranker_input_of(opt_.reranker);
    reranker_ = load_module(opt_.reranker, lm_);
  }
}

ReaderPipeline::~ReaderPipeline() = default;

std::vector<ReaderCandidate> ReaderPipeline::candidates(const std::string& question) const {
  std::vector<RetrievalHit> hits;
  if (opt_.retrieval == "bm25") hits = bm25_->search(question, opt_.candidates, bm25_params_);
  else if (opt_.retrieval == "dense") hits = dense_->search(lm_, tok_, question, opt_.candidates);
  else
    hits = reciprocal_rank_fusion({bm25_->search(question, opt_.candidates, bm25_params_),
                                   dense_->search(lm_, tok_, question, opt_.candidates)},
                                  opt_.candidates);
  std::vector<ReaderCandidate> out;
  for (const auto& h : hits) out.push_back({bm25_->passage(h.docid), h.score, h.score, h.docid});
  if (opt_.rerank == "none" || out.empty()) return out;
  std::vector<Passage> ps;
  for (const auto& c : out) ps.push_back(c.passage);
  const int64_t max_tokens = this->max_tokens();
  const std::vector<double> s = opt_.rerank == "lm" ? likelihood_scores(lm_, tok_, question, ps, max_tokens)
                                                    : reranker_scores(lm_, *reranker_, tok_, question, ps, max_tokens, 16, reranker_input_);
  for (size_t i = 0; i < out.size(); ++i) out[i].rerank_score = s[i];
  std::stable_sort(out.begin(), out.end(), [](const ReaderCandidate& a, const ReaderCandidate& b) { return a.rerank_score > b.rerank_score; });
  return out;
}

int64_t ReaderPipeline::max_tokens() const {
  return opt_.reader_tokens > 0 ? std::min(opt_.reader_tokens, lm_.config().max_seq_len) : lm_.config().max_seq_len;
}

int64_t ReaderPipeline::context_budget(const std::string& question) const {
  // Everything but the context: BOS, the template with an empty context and the question, the module's prefix and
  // the answer budget.
  const std::string rest = render_template(opt_.input, {{"context", ""}, {"question", question}}, "reader input");
  const int64_t used = 1 + int64_t(tok_.encode(rest, false).size()) + (reader_ ? reader_->prefix_length() : opt_.reader_prefix) + opt_.max_new_tokens;
  return max_tokens() - used;
}

PackedContext ReaderPipeline::pack(const std::string& question, const std::vector<ReaderCandidate>& ranked) const {
  const int64_t budget = context_budget(question);
  if (budget < 1)
    throw Error("the question leaves no room for a passage in the reader's " + std::to_string(max_tokens()) +
                "-token context (" + std::to_string(-budget + 1) + " tokens too many): shorten it or lower the answer budget");
  std::vector<Passage> ps;
  for (const auto& c : ranked) ps.push_back(c.passage);
  return pack_passages(ps, budget, [&](const std::string& s) { return int64_t(tok_.encode(s, false).size()); }, opt_.pack);
}

std::string ReaderPipeline::reader_input(const std::string& question, const PackedContext& packed) const {
  return render_template(opt_.input, {{"context", packed.context}, {"question", question}}, "reader input");
}

ReaderOutput ReaderPipeline::answer(const std::string& question) const {
  ReaderOutput out;
  out.ranked = candidates(question);
  out.packed = pack(question, out.ranked);
  out.input = reader_input(question, out.packed);
  std::vector<int64_t> ids = tok_.encode(out.input, false);
  const int64_t bos = bos_for(lm_.config(), tok_);
  if (bos >= 0) ids.insert(ids.begin(), bos);
  at::NoGradGuard ng;
  ModuleInput mi = module_input(lm_, at::tensor(ids, at::kLong).view({1, -1}).to(lm_.device()));
  if (reader_) mi = reader_->apply(lm_, mi);
  SamplingParams sp;
  sp.temperature = 0;
  sp.max_new_tokens = opt_.max_new_tokens;
  sp.eos_ids = lm_.config().eos_ids;
  const auto gen = generate_from_embeds(lm_, mi.embeds, mi.mask, sp, nullptr, stop_at_strings(tok_, {"\n"}))[0];
  out.answer = tok_.decode(gen, true);
  if (auto at = out.answer.find('\n'); at != std::string::npos) out.answer.resize(at);
  const size_t b = out.answer.find_first_not_of(' ');
  out.answer = b == std::string::npos ? "" : out.answer.substr(b);
  return out;
}

}  // namespace frozenlm
