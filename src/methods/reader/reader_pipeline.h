// The frozen-reader pipeline for open-domain QA (Levine et al. 2022, §3), all on one frozen LM:
//   retrieve (BM25 / dense / hybrid) → re-rank (none / the LM's likelihood / a trained re-ranker module)
//   → pack the best passages greedily into the reader's context → the frozen LM, prompt-tuned to read, answers.
// Its options are saved beside a trained reader module (reader.json), so `answer` and `eval` rebuild it exactly.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "retrieval/bm25.h"
#include "retrieval/dense_index.h"
#include "retrieval/packing.h"

namespace frozenlm {

class FrozenLM;
class Tokenizer;
class TrainableModule;

struct ReaderOptions {
  std::string index;                 // passage index directory
  std::string retrieval = "bm25";    // bm25 | dense | hybrid
  bool dense_projection = false;     // dense / hybrid search the trained projection's graph (`index project`)
  int64_t candidates = 20;           // passages retrieved (and re-ranked) per question
  std::string rerank = "none";       // none | lm | trained
  std::string reranker;              // the trained re-ranker module's directory (rerank = trained)
  std::string input = "Context: {context}\nQuestion: {question}\nAnswer:";  // the reader's input
  int64_t max_new_tokens = 16;       // the answer budget reserved in the context
  int64_t reader_tokens = 0;         // the reader's whole input incl. prefix and answer budget (0: the LM's
                                     // max_seq_len; a model pretrained on shorter windows reads best within them)
  int64_t reader_prefix = 0;         // positions reserved for the reader module's prefix when the pipeline runs
                                     // without it (building the reader's training data); with one: its own length
  PackOptions pack;

  nlohmann::json to_json() const;
  static ReaderOptions from_json(const nlohmann::json& j, const std::string& where);
};

struct ReaderCandidate {
  Passage passage;
  double retrieval_score = 0;
  double rerank_score = 0;  // = retrieval_score without re-ranking
  uint32_t docid = 0;       // in the index's database
};

struct ReaderOutput {
  std::string answer;
  std::vector<ReaderCandidate> ranked;  // best first (after re-ranking)
  PackedContext packed;                 // which of `ranked` were read
  std::string input;                    // what the reader read (without its module's prefix)
};

class ReaderPipeline {
 public:
  // reader: the prompt module in front of the reading pass (null: the bare frozen LM). The re-ranker module is loaded
  // from opt.reranker when rerank = trained.
  ReaderPipeline(const FrozenLM& lm, const Tokenizer& tok, ReaderOptions opt, const TrainableModule* reader);
  ~ReaderPipeline();

  std::vector<ReaderCandidate> candidates(const std::string& question) const;  // retrieved and re-ranked
  // Packs `ranked` for `question`: the token budget is the LM's context minus the reader module's prefix, the input
  // template with the question, BOS and the answer budget.
  PackedContext pack(const std::string& question, const std::vector<ReaderCandidate>& ranked) const;
  std::string reader_input(const std::string& question, const PackedContext& packed) const;
  // Retrieve, re-rank, pack, and generate greedily (up to a newline).
  ReaderOutput answer(const std::string& question) const;
  int64_t context_budget(const std::string& question) const;
  const ReaderOptions& options() const { return opt_; }
  const Bm25Searcher& bm25() const { return *bm25_; }
  int64_t max_tokens() const;  // the reader's whole input: reader_tokens, at most the LM's max_seq_len

 private:
  const FrozenLM& lm_;
  const Tokenizer& tok_;
  ReaderOptions opt_;
  const TrainableModule* reader_;
  std::unique_ptr<TrainableModule> reranker_;
  std::string reranker_input_;  // the template the trained re-ranker read in training
  Bm25Params bm25_params_;
  std::unique_ptr<Bm25Searcher> bm25_;
  std::unique_ptr<DenseSearcher> dense_;
};

}  // namespace frozenlm
