#include "retrieval/bm25.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <xapian.h>

#include "core/error.h"

namespace frozenlm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

Xapian::TermGenerator make_term_generator() {
  Xapian::TermGenerator tg;
  tg.set_stemmer(Xapian::Stem("english"));
  tg.set_stemming_strategy(Xapian::TermGenerator::STEM_ALL);  // every term stemmed, no unstemmed copy
  return tg;
}

const std::string kIdPrefix = "Q";  // Xapian's convention for a unique-id term (a boolean term: no weight, no length)

// Query terms with their counts, tokenised as passages are.
std::map<std::string, Xapian::termcount> query_terms(const std::string& text) {
  Xapian::TermGenerator tg = make_term_generator();
  Xapian::Document doc;
  tg.set_document(doc);
  tg.index_text(text);
  std::map<std::string, Xapian::termcount> out;
  for (auto t = doc.termlist_begin(); t != doc.termlist_end(); ++t) out[*t] = t.get_wdf();
  return out;
}

}  // namespace

std::vector<std::string> bm25_terms(const std::string& text) {
  Xapian::TermGenerator tg = make_term_generator();
  Xapian::Document doc;
  tg.set_document(doc);
  tg.index_text(text);
  std::vector<std::pair<Xapian::termpos, std::string>> by_pos;
  for (auto t = doc.termlist_begin(); t != doc.termlist_end(); ++t)
    for (auto p = t.positionlist_begin(); p != t.positionlist_end(); ++p) by_pos.push_back({*p, *t});
  std::sort(by_pos.begin(), by_pos.end());
  std::vector<std::string> out;
  for (auto& [pos, term] : by_pos) out.push_back(term);
  return out;
}

bool is_remote_shard(const std::string& spec) {
  const size_t colon = spec.rfind(':');
  return colon != std::string::npos && colon > 0 && colon + 1 < spec.size() && spec.find('/') == std::string::npos &&
         spec.find_first_not_of("0123456789", colon + 1) == std::string::npos && !fs::exists(spec);
}

// ---- writer ----

struct Bm25Writer::Impl {
  std::string dir;
  Xapian::WritableDatabase db;
  Xapian::TermGenerator tg = make_term_generator();
};

Bm25Writer::Bm25Writer(const std::string& dir, bool create) : impl_(std::make_unique<Impl>()) {
  impl_->dir = dir;
  try {
    if (create) {
      if (fs::exists(dir) && !fs::is_empty(dir)) throw Error(dir + ": already exists (a BM25 database is built into a new directory)");
      impl_->db = Xapian::WritableDatabase(dir, Xapian::DB_CREATE);
    } else {
      if (!fs::is_directory(dir)) throw Error(dir + ": no BM25 database here");
      impl_->db = Xapian::WritableDatabase(dir, Xapian::DB_OPEN);
    }
  } catch (const Xapian::Error& e) {
    throw Error(dir + ": cannot open the BM25 database (" + e.get_description() + ")");
  }
}

Bm25Writer::~Bm25Writer() = default;

bool Bm25Writer::contains(const std::string& passage_id) const { return impl_->db.term_exists(kIdPrefix + passage_id); }

void Bm25Writer::add(const Passage& p) {
  Xapian::Document doc;
  doc.set_data(json{{"id", p.id}, {"title", p.title}, {"text", p.text}}.dump());
  impl_->tg.set_document(doc);
  if (!p.title.empty()) {
    impl_->tg.index_text(p.title);
    impl_->tg.increase_termpos();  // no phrase across title and text
  }
  impl_->tg.index_text(p.text);
  if (kIdPrefix.size() + p.id.size() > 240) throw Error("passage id '" + p.id.substr(0, 60) + "...' is too long (at most 239 bytes)");
  doc.add_boolean_term(kIdPrefix + p.id);
  impl_->db.add_document(doc);
}

uint64_t Bm25Writer::size() const { return impl_->db.get_doccount(); }
void Bm25Writer::begin_transaction() { impl_->db.begin_transaction(); }
void Bm25Writer::commit_transaction() { impl_->db.commit_transaction(); }
void Bm25Writer::cancel_transaction() { impl_->db.cancel_transaction(); }
void Bm25Writer::commit() { impl_->db.commit(); }

// ---- searcher ----

struct Bm25Searcher::Impl {
  Xapian::Database db;
};

Bm25Searcher::Bm25Searcher(const std::vector<std::string>& shards) : impl_(std::make_unique<Impl>()) {
  if (shards.empty()) throw Error("no BM25 database to search");
  for (const std::string& s : shards) {
    try {
      Xapian::Database one;
      const size_t colon = s.rfind(':');
      if (is_remote_shard(s)) {
        one = Xapian::Remote::open(s.substr(0, colon), unsigned(std::stoul(s.substr(colon + 1))));
      } else {
        if (!fs::is_directory(s)) throw Error(s + ": no BM25 database here (a directory, or host:port of xapian-tcpsrv)");
        one = Xapian::Database(s);
      }
      impl_->db.add_database(one);
    } catch (const Xapian::Error& e) {
      throw Error(s + ": cannot open the BM25 database (" + e.get_description() + ")");
    }
  }
}

Bm25Searcher::~Bm25Searcher() = default;

std::vector<RetrievalHit> Bm25Searcher::search(const std::string& query, int64_t k, const Bm25Params& params) const {
  const auto terms = query_terms(query);
  if (terms.empty() || k <= 0) return {};
  std::vector<Xapian::Query> leaves;
  for (const auto& [term, count] : terms) leaves.emplace_back(term, count);
  Xapian::Enquire enquire(impl_->db);
  enquire.set_query(Xapian::Query(Xapian::Query::OP_OR, leaves.begin(), leaves.end()));
  enquire.set_weighting_scheme(Xapian::BM25Weight(params.k1, 0, 1, params.b, 0.5));
  enquire.set_docid_order(Xapian::Enquire::ASCENDING);
  Xapian::MSet mset = enquire.get_mset(0, Xapian::doccount(k));
  std::vector<RetrievalHit> hits;
  for (auto it = mset.begin(); it != mset.end(); ++it) hits.push_back({*it, it.get_weight()});
  return hits;
}

Passage Bm25Searcher::passage(uint32_t docid) const {
  const json j = json::parse(impl_->db.get_document(docid).get_data());
  return {j.at("id").get<std::string>(), j.at("title").get<std::string>(), j.at("text").get<std::string>()};
}

bool Bm25Searcher::find(const std::string& passage_id, Passage* out) const {
  const std::string term = kIdPrefix + passage_id;
  auto it = impl_->db.postlist_begin(term);
  if (it == impl_->db.postlist_end(term)) return false;
  if (out) *out = passage(*it);
  return true;
}

uint32_t Bm25Searcher::docid_of(const std::string& passage_id) const {
  const std::string term = kIdPrefix + passage_id;
  auto it = impl_->db.postlist_begin(term);
  return it == impl_->db.postlist_end(term) ? 0 : *it;
}

uint64_t Bm25Searcher::size() const { return impl_->db.get_doccount(); }
double Bm25Searcher::average_length() const { return impl_->db.get_avlength(); }
uint64_t Bm25Searcher::distinct_terms() const {  // words only: the id terms ("Q" prefix) are skipped
  uint64_t n = 0;
  for (auto t = impl_->db.allterms_begin(); t != impl_->db.allterms_end(); ++t)
    if ((*t).rfind(kIdPrefix, 0) != 0) ++n;
  return n;
}

}  // namespace frozenlm
