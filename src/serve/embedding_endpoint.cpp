// POST /v1/embeddings: the frozen LM's own text vectors — the dense retriever's (retrieval/dense_index.h: the mean of
// the hidden states after `layer` over the text's tokens after BOS, L2-normalised) — in OpenAI's response shape.
// The forward runs on the engine thread between decode steps (Engine::run_on_engine), as a prefill does, so it never
// competes with decoding for the cores.
#include "core/torch_pch.h"
#include "retrieval/dense_index.h"
#include "serve/server_impl.h"
#include "tokenizer/tokenizer.h"

namespace frozenlm::serve {

namespace {

std::string base64(const float* v, size_t n) {  // the little-endian fp32 bytes, as OpenAI's clients decode them
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto* b = reinterpret_cast<const unsigned char*>(v);
  const size_t len = n * sizeof(float);
  std::string out;
  for (size_t i = 0; i < len; i += 3) {
    const uint32_t x = uint32_t(b[i]) << 16 | (i + 1 < len ? uint32_t(b[i + 1]) << 8 : 0) | (i + 2 < len ? uint32_t(b[i + 2]) : 0);
    out += abc[(x >> 18) & 63];
    out += abc[(x >> 12) & 63];
    out += i + 1 < len ? abc[(x >> 6) & 63] : '=';
    out += i + 2 < len ? abc[x & 63] : '=';
  }
  return out;
}

}  // namespace

void handle_embeddings(Server::Impl& P, const ServerOptions& opt, const std::string& body, httplib::Response& res) {
  try {
    if (P.draining) throw ApiError(503, "the server is shutting down", "", "server_shutting_down", "server_error");
    const EmbeddingRequest e = parse_embedding_request(body);
    if (e.model != opt.model_name) {
      if (P.modules.find(e.model))
        throw ApiError(400, "embeddings come from the frozen LM itself: give the base model's name ('" + opt.model_name + "'), not a module's", "model");
      throw ApiError(404, "model '" + e.model + "' not found", "model", "model_not_found");
    }
    if (e.dimensions && *e.dimensions != P.lm.dim())
      throw ApiError(400, "'dimensions' can only be the model's own, " + std::to_string(P.lm.dim()), "dimensions", "unsupported_parameter");
    if (e.layer > P.lm.config().n_layers)
      throw ApiError(400, "'layer' must be between -1 (all) and " + std::to_string(P.lm.config().n_layers), "layer");
    // Token ids, BOS excluded (embed_token_ids puts it in front); the whole text, at most the context.
    std::vector<std::vector<int64_t>> ids = e.ids;
    for (const std::string& t : e.texts) ids.push_back(P.tok.encode(t, false));
    int64_t tokens = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i].empty()) throw ApiError(400, "input " + std::to_string(i) + " encodes to no tokens", "input");
      for (int64_t id : ids[i])
        if (id >= P.engine.usable_vocab()) throw ApiError(400, "token id " + std::to_string(id) + " is outside the vocabulary", "input");
      if (int64_t(ids[i].size()) + 1 > P.engine.context_length())
        throw ApiError(400, "input " + std::to_string(i) + " has " + std::to_string(ids[i].size()) + " tokens, more than the model's context length " +
                       std::to_string(P.engine.context_length()), "input", "context_length_exceeded");
      tokens += int64_t(ids[i].size());
    }
    DenseOptions d;
    d.layer = e.layer;
    d.max_tokens = P.engine.context_length();
    d.progress = false;
    at::Tensor v;
    try {
      P.engine.run_on_engine([&] { v = embed_token_ids(P.lm, bos_for(P.lm.config(), P.tok), ids, d).contiguous(); }).get();
    } catch (const ApiError&) {
      throw;
    } catch (const std::exception& ex) {
      if (P.draining) throw ApiError(503, "the server is shutting down", "", "server_shutting_down", "server_error");
      const std::string what = ex.what();
      t_log.error = "embeddings: " + what.substr(0, what.find('\n'));
      return send_json(res, 500, ApiError(500, internal_error_message(t_log.request_id)).body());
    }
    json data = json::array();
    const int64_t n = v.size(0), dim = v.size(1);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = v.data_ptr<float>() + i * dim;
      data.push_back({{"object", "embedding"}, {"index", i},
                      {"embedding", e.base64 ? json(base64(row, size_t(dim))) : json(std::vector<float>(row, row + dim))}});
    }
    send_json(res, 200, {{"object", "list"}, {"data", data}, {"model", e.model}, {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}});
  } catch (const ApiError& e) {
    t_log.error = e.what();
    send_error(res, e);
  }
}

}  // namespace frozenlm::serve
