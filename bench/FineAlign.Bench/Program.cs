using System.Diagnostics;
using System.Text.Json.Nodes;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Trainers;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

// FineAlign benchmarks: the workloads of ../shared/bench/reference_pytorch.py on the stories15M
// shape, each reported as tokens/s and as model-FLOPs utilisation (MFU) against the fp32 GEMM peak
// measured in the same process. Not a test: run it by hand (see bench/RESULTS.md).
//
//   dotnet run -c Release --project bench/FineAlign.Bench -- [--workload all|gemm|fwdbwd|generate|dpo|dpo_precomputed|ppo|tokenize|corpus|serve|remote|rs_all|rs_bf16|rs_dpo]
//                                                            [--reps N] [--threads N]
//
// "all" runs every workload in its own child process, so each peak RSS belongs to one workload.
//
// FLOP accounting (PaLM appendix B / nanoGPT estimate_mfu, stated explicitly):
//   N' = parameters doing matmul work = all parameters − the input embedding table (a lookup, no
//        FLOPs); the untied LM head IS counted (it is the largest matmul here). Norm gains are
//        counted too (0.01 % of N').
//   forward FLOPs per token          = 2·N' + 4·L·d·ctx   (QKᵀ and A·V over the full ctx, causal
//                                                            half not subtracted, as PaLM does)
//   forward + backward per token     = 6·N' + 12·L·d·ctx
//   DPO step per token (policy f+b, reference f) = 8·N' + 16·L·d·ctx
//   decoding, per new token at cache length S    = 2·N' + 4·L·d·S
//   PPO (policy N'_p, value model N'_v = trunk + 1-output head, no LM head), per token of the
//   [B, 192] rollout: scoring = 2·(2·N'_p + N'_v) + 3·4·L·d·ctx (policy, reference, value forwards);
//   update = 6·(N'_p + N'_v) + 2·12·L·d·ctx; generation as "decoding" above.
// Stories15M: N' = 15.19 M of 24.41 M, L = 6, d = 288, ctx = 256 → 96.5 MFLOP/token for fwd+bwd.

var argsMap = ParseArgs(args);
int threads = int.Parse(argsMap.GetValueOrDefault("threads", "2"));
int reps = int.Parse(argsMap.GetValueOrDefault("reps", "5"));
string workload = argsMap.GetValueOrDefault("workload", "all");
if (workload == "decode-profile") return DecodeProfile.Run(argsMap);
if (workload == "gemv") return GemvBench.Run(argsMap);   // one-row / few-row decode matmuls vs the copy bandwidth (GemvBench.cs)
if (workload == "decode-dtype") return DecodeDtype.Run(argsMap);   // --dtype bfloat16 decoding vs fp32: speed and log-prob error   // issue #18 per-step profile (DecodeProfile.cs)
if (workload is "decode-peer" or "export-gguf") return DecodePeer.Run(workload, argsMap);   // FineAlign vs llama.cpp (DecodePeer.cs)
if (workload.StartsWith("rs_", StringComparison.Ordinal)) return RealScaleBench.Run(workload, argsMap, reps, threads);   // issue #15 (RealScale.cs)

if (workload == "all")
{
    // One child process per workload: peak RSS is per process, so it cannot be reset reliably
    // once a previous workload has grown the heap.
    int rc = 0;
    foreach (var w in new[] { "fwdbwd", "dpo", "dpo_precomputed", "generate", "ppo" })
        rc |= RunChild(w, reps, threads);
    return rc;
}

// Built-in corpus generation (the demo's data stage): a benchmark, not a timed test, since wall-clock
// limits in tests fail under load. Reports reviews/s, median of --reps.
if (workload == "corpus")
{
    var times = new List<double>();
    for (int r = 0; r < reps; r++)
    {
        var sw = Stopwatch.StartNew();
        var reviews = FineAlign.Data.Corpus.ReviewCorpus.Generate(1 + r, 20_000);
        times.Add(sw.Elapsed.TotalSeconds);
        if (reviews.Count != 20_000) throw new InvalidOperationException($"generated {reviews.Count} reviews, expected 20000");
    }
    times.Sort();
    double med = times[times.Count / 2];
    Console.WriteLine(new JsonObject { ["workload"] = "corpus", ["reviews"] = 20_000, ["s_median"] = Math.Round(med, 3),
        ["reviews_per_s"] = Math.Round(20_000 / med), ["reps"] = reps }.ToJsonString());
    return 0;
}

// Tokenizer speed needs no model and no GEMM figure (see TokenizerBench.cs).
if (workload == "tokenize") return TokenizerBench.Run(reps);

torch.set_num_threads(threads);
torch.manual_seed(0);
if (workload == "serve") return await ServeBench.RunAsync(reps);   // finealign serve vs direct generation (ServeBench.cs)
if (workload == "remote") return await RemoteBench.RunAsync(argsMap, reps, threads);   // rollouts on 1/2/4 serve processes, PPO local vs remote (RemoteBench.cs)

var config = Stories15M();
long nAll = CountParams(config, out long nEmbedding);
long nMatmul = nAll - nEmbedding;                      // N' (see the header)
int L = config.NumLayers, d = config.HiddenSize, ctx = config.MaxPositionEmbeddings;
double fwdPerToken = 2.0 * nMatmul + 4.0 * L * d * ctx;
double fwdBwdPerToken = 6.0 * nMatmul + 12.0 * L * d * ctx;

var (gemmPeak, gemmBest) = MeasureGemmPeak(reps);
double bandwidth = MeasureCopyBandwidth(reps);
Report(new JsonObject
{
    ["workload"] = "machine", ["threads"] = threads, ["gemm_fp32_gflops_median"] = Math.Round(gemmPeak, 1),
    ["gemm_fp32_gflops_best"] = Math.Round(gemmBest, 1), ["copy_gb_per_s_median"] = Math.Round(bandwidth, 1),
    ["params"] = nAll, ["params_matmul"] = nMatmul, ["load_1min"] = LoadAverage(),
});
if (workload == "gemm") return 0;

// Peak RSS from here on belongs to the workload (plus the runtime baseline reported beside it).
ResetPeakRss();
long baselineMb = RssMb("VmRSS");

if (workload == "fwdbwd")
{
    // Forward + backward of the causal-LM loss at batch 16 × 256 (no optimizer step: the issue's
    // "forward+backward tokens/s").
    using var model = ModelFactory.Create(config, seed: 0);
    model.train();
    var ids = torch.randint(0, config.VocabSize, new long[] { 16, 256 }, dtype: ScalarType.Int64);
    var times = Time(reps, () =>
    {
        using var scope = torch.NewDisposeScope();
        var logits = model.Forward(ids);
        var loss = F.cross_entropy(
            logits[TensorIndex.Colon, TensorIndex.Slice(null, -1)].reshape(-1, config.VocabSize),
            ids[TensorIndex.Colon, TensorIndex.Slice(1, null)].reshape(-1));
        loss.backward();
        model.zero_grad();
    });
    ReportStep("fwdbwd", times, 16 * 256, fwdBwdPerToken);
}
else if (workload is "dpo" or "dpo_precomputed")
{
    // One DPO step as reference_pytorch.py defines it: 8 pairs × 256 tokens (prompt 64 + completion
    // 192), chosen rows first then rejected; sigmoid loss, β = 0.1 (Rafailov et al. 2023, eq. 7);
    // AdamW lr 1e-5. The loss is written inline here until the DPO objective lands in the library.
    // "dpo_precomputed" never builds a reference model: reference log-probs are computed once
    // from the initial policy (identical to a frozen reference at step 0), as if read from disk.
    bool precomputed = workload == "dpo_precomputed";
    const int pairs = 8;
    const double beta = 0.1;
    using var policy = ModelFactory.Create(config, seed: 0);
    using var reference = precomputed ? null : ModelFactory.Create(config, seed: 0);
    reference?.eval();
    if (reference is not null) foreach (var p in reference.parameters()) p.requires_grad = false;
    policy.train();
    using var opt = torch.optim.AdamW(policy.parameters(), lr: 1e-5);
    var ids = torch.randint(0, config.VocabSize, new long[] { 2 * pairs, 256 }, dtype: ScalarType.Int64);
    var mask = torch.zeros(2 * pairs, 256);
    mask[TensorIndex.Colon, TensorIndex.Slice(64, null)] = torch.ones(1);

    Tensor? storedRefLogps = null;
    if (precomputed)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        storedRefLogps = CausalLmLoss.SequenceLogProbs(policy.Forward(ids), ids, mask).MoveToOuterDisposeScope();
    }

    double lastLoss = 0;
    var times = Time(reps, () =>
    {
        using var scope = torch.NewDisposeScope();
        Tensor refLogps;
        if (storedRefLogps is not null) refLogps = storedRefLogps;
        else
        {
            // Own scope: the reference logits ([16, 256, 32000] fp32 = 524 MB) are freed before the
            // policy forward instead of living through the backward pass.
            using var refScope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            refLogps = CausalLmLoss.SequenceLogProbs(reference!.Forward(ids), ids, mask).MoveToOuterDisposeScope();
        }
        var polLogps = CausalLmLoss.SequenceLogProbs(policy.Forward(ids), ids, mask);
        var chosen = TensorIndex.Slice(0, pairs);
        var rejected = TensorIndex.Slice(pairs, null);
        var margin = (polLogps[chosen] - polLogps[rejected]) - (refLogps[chosen] - refLogps[rejected]);
        var loss = -F.logsigmoid(beta * margin).mean();
        opt.zero_grad();
        loss.backward();
        opt.step();
        lastLoss = loss.item<float>();
    });
    double perToken = precomputed ? fwdBwdPerToken : fwdBwdPerToken + fwdPerToken;
    var extra = new JsonObject
    {
        ["loss_last"] = Math.Round(lastLoss, 4),
        ["weights_plus_grads_mb_one_model"] = Math.Round(2.0 * nAll * 4 / (1 << 20), 1),
        ["adamw_state_mb"] = Math.Round(2.0 * nAll * 4 / (1 << 20), 1),
    };
    ReportStep(workload, times, 2 * pairs * 256, perToken, extra);
}
else if (workload == "generate")
{
    // 8 prompts × 64 tokens, 128 new tokens, KV cache, temperature 1, top-p 0.9, no early stop.
    const int batch = 8, promptLen = 64, newTokens = 128;
    using var model = ModelFactory.Create(config, seed: 0);
    var prompts = Enumerable.Range(0, batch).Select(i =>
        torch.randint(0, config.VocabSize, new long[] { promptLen }, dtype: ScalarType.Int64).data<long>().Select(x => (int)x).ToArray()).ToList();
    var options = new GenerationOptions
    {
        MaxNewTokens = newTokens, DoSample = true, Temperature = 1.0, TopP = 0.9, Seed = 1,
        EosTokenIds = Array.Empty<int>(),   // no early stop, as in the reference
    };
    TextGenerator.Generate(model, prompts, options with { MaxNewTokens = 8 });   // warm-up
    var times = new List<double>();
    for (int r = 0; r < Math.Max(1, (reps + 1) / 2); r++)
    {
        var sw = Stopwatch.StartNew();
        var outs = TextGenerator.Generate(model, prompts, options);
        times.Add(sw.Elapsed.TotalSeconds);
        if (outs.Any(o => o.Tokens.Length != newTokens)) throw new InvalidOperationException("a row stopped early");
    }
    double med = Median(times);
    // The generator runs one prefill over the prompts, then one single-token forward per new token
    // except the last (its successor is never needed): 127 decode steps.
    int decodeSteps = newTokens - 1;
    double prefillFlops = batch * promptLen * (2.0 * nMatmul + 4.0 * L * d * promptLen);
    double decodeFlops = 0, decodeBytes = 0;
    double weightBytes = 4.0 * nMatmul;                    // every matmul weight is read once per step
    for (int s = promptLen + 1; s <= promptLen + decodeSteps; s++)
    {
        decodeFlops += batch * (2.0 * nMatmul + 4.0 * L * d * s);
        decodeBytes += weightBytes + 4.0 * 2 * L * batch * s * d;   // + K and V of every cached token
    }
    // Roofline: the prefill at the GEMM peak plus every decode step at the copy bandwidth
    // (weights + KV cache streamed from memory once per step; sampling costs not included).
    double rooflineS = prefillFlops / (gemmPeak * 1e9) + decodeBytes / (bandwidth * 1e9);
    double flops = prefillFlops + decodeFlops;
    Report(new JsonObject
    {
        ["workload"] = "generate", ["new_tokens_per_call"] = batch * newTokens, ["call_s_median"] = Math.Round(med, 4),
        ["call_s_all"] = new JsonArray(times.Select(t => (JsonNode)Math.Round(t, 3)).ToArray()),
        ["new_tokens_per_s"] = Math.Round(batch * newTokens / med, 1), ["gflops"] = Math.Round(flops / med / 1e9, 2),
        ["mfu_vs_gemm"] = Math.Round(flops / med / 1e9 / gemmPeak, 3),
        ["roofline_s"] = Math.Round(rooflineS, 3), ["fraction_of_roofline"] = Math.Round(rooflineS / med, 3),
        ["decode_bytes_per_step_mb"] = Math.Round(decodeBytes / decodeSteps / (1 << 20), 1),
        ["vs_pytorch_ref_74_tok_s"] = Math.Round(batch * newTokens / med / 74.0, 2),
        ["peak_rss_mb"] = RssMb("VmHWM"), ["baseline_rss_mb"] = baselineMb, ["load_1min"] = LoadAverage(),
    });
}
else if (workload == "ppo")
{
    // One PPO iteration (issue #4): rollout of 8 prompts × 64 random tokens, 128 new tokens (top-p 0.9 as
    // in the generate workload, no EOS), then scoring (policy + reference log-probs, values, a cheap
    // programmatic reward, KL shaping, GAE), then 1 PPO epoch × 1 mini-batch of 8 (policy + value loss,
    // clip-grad, AdamW). Phase times come from OnlineRlTrainer.LastStepSeconds.
    const int batch = 8, promptLen = 64, newTokens = 128, seqLen = promptLen + newTokens;
    var noEos = Stories15M(eos: Array.Empty<int>());
    using var policy = ModelFactory.Create(noEos, seed: 0);
    using var reference = ModelFactory.Create(noEos, seed: 0);          // a copy of the initial policy
    using var valueModel = new ScoredLM(ModelFactory.Create(noEos, seed: 0), HeadKind.Token, 1, seed: 1);
    var value = ValueModel.Separate(valueModel);
    // --logit-scale K multiplies the final norm's gain of policy and reference: random weights give near-uniform
    // next-token distributions (logit std ≈ 0.34), so top-p 0.9 keeps ~90 % of the vocabulary and the sampler falls back
    // to a full sort every step; a trained model's nucleus is small. K = 12 (logit std ≈ 4) gives such a nucleus.
    double logitScale = double.Parse(argsMap.GetValueOrDefault("logit-scale", "1"), System.Globalization.CultureInfo.InvariantCulture);
    if (logitScale != 1)
        using (torch.no_grad())
            foreach (var m in new[] { policy, reference })
                m.named_parameters().Single(p => p.name == "model.norm.weight").parameter.mul_(logitScale);
    // The value trunk's own LM head is never run (TokenScores reads the final hidden states): not counted.
    long nValueMatmul = valueModel.named_parameters().Where(p => !p.name.Contains("lm_head")).Sum(p => p.parameter.numel()) - nEmbedding;
    var tokenizer = new IdTokenizer(noEos.VocabSize);
    var prompts = Enumerable.Range(0, batch).Select(_ => string.Join(' ',
        torch.randint(0, config.VocabSize, new long[] { promptLen }, dtype: ScalarType.Int64).data<long>().ToArray())).ToList();
    // Programmatic sequence reward: fraction of even token ids (costs nothing next to the forwards).
    var reward = ProgrammaticRewardSource.Sequence("even", e => e.ResponseIds.Count(t => t % 2 == 0) / (double)Math.Max(1, e.ResponseIds.Length));
    // --rollout-dtype bfloat16 samples from a bf16 copy of the policy (LocalRolloutEngine); scoring and update stay fp32.
    string rolloutDtype = argsMap.GetValueOrDefault("rollout-dtype", "auto");
    var engine = new LocalRolloutEngine(policy, tokenizer, rolloutDtype == "bfloat16" ? ScalarType.BFloat16 : null);
    var trainer = new OnlineRlTrainer(policy, reference, value, tokenizer, reward, prompts, OnlineRlOptions.Ppo with
    {
        OutputDir = Path.Combine(Path.GetTempPath(), "finealign-bench-ppo"), Steps = 1000, BatchSize = batch,
        MiniBatchSize = batch, Epochs = 1, LearningRate = 1e-6, MaxNewTokens = newTokens, Temperature = 1.0, TopP = 0.9,
    }) { WriteTensorBoard = false, Rollouts = engine };

    // --split-generation: the rollout engine alone on the same prompts, greedy vs top-p 0.9 (where generation time goes).
    if (argsMap.ContainsKey("split-generation"))
    {
        var promptIds = prompts.Select(p => TextGenerator.EncodePrompt(tokenizer, p)).ToList();
        foreach (var (name, topP, temp) in new[] { ("greedy", 1.0, 0.0), ("top_p_0.9", 0.9, 1.0), ("top_p_1.0", 1.0, 1.0), ("greedy", 1.0, 0.0), ("top_p_0.9", 0.9, 1.0), ("top_p_1.0", 1.0, 1.0) })
        {
            var sw = Stopwatch.StartNew();
            engine.Generate(new RolloutRequest { PromptIds = promptIds, MaxNewTokens = newTokens, Temperature = temp, TopP = topP, Seed = 3, StopTokenIds = Array.Empty<int>() });
            Console.WriteLine(new JsonObject { ["workload"] = "ppo_generation_split", ["sampling"] = name, ["logit_scale"] = logitScale, ["s"] = Math.Round(sw.Elapsed.TotalSeconds, 3), ["load_1min"] = LoadAverage() }.ToJsonString());
        }
    }

    var phases = new Dictionary<string, List<double>> { ["generation"] = new(), ["scoring"] = new(), ["update"] = new() };
    var totals = new List<double>();
    Dictionary<string, double> last = new();
    for (int r = 0; r < reps + 1; r++)
    {
        var sw = Stopwatch.StartNew();
        last = trainer.Step(r + 1);
        double total = sw.Elapsed.TotalSeconds;
        if (last["val/mean_response_length"] != newTokens) throw new InvalidOperationException("a row stopped early");
        if (r == 0) continue;   // warm-up
        totals.Add(total);
        foreach (var (k, v) in trainer.LastStepSeconds) phases[k].Add(v);
    }

    // Generation FLOPs and roofline exactly as in the generate workload.
    int decodeSteps = newTokens - 1;
    double genFlops = batch * promptLen * (2.0 * nMatmul + 4.0 * L * d * promptLen), decodeBytes = 0;
    for (int s = promptLen + 1; s <= promptLen + decodeSteps; s++)
    {
        genFlops += batch * (2.0 * nMatmul + 4.0 * L * d * s);
        decodeBytes += 4.0 * nMatmul + 4.0 * 2 * L * batch * s * d;
    }
    double genRoofline = batch * promptLen * (2.0 * nMatmul + 4.0 * L * d * promptLen) / (gemmPeak * 1e9) + decodeBytes / (bandwidth * 1e9);
    double attn = 4.0 * L * d * seqLen;
    long tokens = batch * seqLen;
    double scoreFlops = tokens * (2.0 * (2.0 * nMatmul + nValueMatmul) + 3 * attn);
    double updateFlops = tokens * (6.0 * (nMatmul + nValueMatmul) + 2 * 3 * attn);
    JsonObject Phase(string name, double flops, double rooflineS)
    {
        double med = Median(phases[name]);
        return new JsonObject
        {
            ["s_median"] = Math.Round(med, 4), ["s_all"] = new JsonArray(phases[name].Select(t => (JsonNode)Math.Round(t, 3)).ToArray()),
            ["gflop"] = Math.Round(flops / 1e9, 2), ["gflops"] = Math.Round(flops / med / 1e9, 1),
            ["mfu_vs_gemm"] = Math.Round(flops / med / 1e9 / gemmPeak, 3),
            ["roofline_s"] = Math.Round(rooflineS, 3), ["fraction_of_roofline"] = Math.Round(rooflineS / med, 3),
        };
    }
    double genMed = Median(phases["generation"]), totalMed = Median(totals);
    double allFlops = genFlops + scoreFlops + updateFlops;
    Report(new JsonObject
    {
        ["workload"] = "ppo", ["rollout_dtype"] = rolloutDtype, ["logit_scale"] = logitScale, ["batch"] = batch, ["prompt_tokens"] = promptLen, ["new_tokens"] = newTokens,
        ["generation_share"] = Math.Round(Median(phases["generation"]) / Median(totals), 3),
        ["params_matmul_policy"] = nMatmul, ["params_matmul_value"] = nValueMatmul,
        ["iteration_s_median"] = Math.Round(totalMed, 4), ["iteration_s_all"] = new JsonArray(totals.Select(t => (JsonNode)Math.Round(t, 3)).ToArray()),
        ["rollout_tokens_per_s"] = Math.Round(tokens / totalMed, 1), ["gflop_per_iteration"] = Math.Round(allFlops / 1e9, 2),
        ["mfu_vs_gemm"] = Math.Round(allFlops / totalMed / 1e9 / gemmPeak, 3),
        ["generation"] = Phase("generation", genFlops, genRoofline),
        ["scoring"] = Phase("scoring", scoreFlops, scoreFlops / (gemmPeak * 1e9)),
        ["update"] = Phase("update", updateFlops, updateFlops / (gemmPeak * 1e9)),
        ["generation_new_tokens_per_s"] = Math.Round(batch * newTokens / genMed, 1),
        ["generation_vs_pytorch_ref_74_tok_s"] = Math.Round(batch * newTokens / genMed / 74.0, 2),
        ["scoring_tokens_per_s"] = Math.Round(tokens / Median(phases["scoring"]), 1),
        ["update_tokens_per_s"] = Math.Round(tokens / Median(phases["update"]), 1),
        ["loss_policy_last"] = Math.Round(last["loss/policy_avg"], 4), ["loss_value_last"] = Math.Round(last["loss/value_avg"], 4),
        ["peak_rss_mb"] = RssMb("VmHWM"), ["baseline_rss_mb"] = baselineMb, ["load_1min"] = LoadAverage(),
    });
    trainer.Dispose();
}
else if (workload == "profile")
{
    // Where the time goes (not part of "all"): forward only, backward, the LM head + loss alone,
    // and for decoding the model's single-token forward vs the full sampling loop.
    using var model = ModelFactory.Create(config, seed: 0);
    var ids = torch.randint(0, config.VocabSize, new long[] { 16, 256 }, dtype: ScalarType.Int64);
    Tensor LossOf(Tensor logits) => F.cross_entropy(
        logits[TensorIndex.Colon, TensorIndex.Slice(null, -1)].reshape(-1, config.VocabSize),
        ids[TensorIndex.Colon, TensorIndex.Slice(1, null)].reshape(-1));
    var parts = new JsonObject { ["workload"] = "profile" };
    bool trainPart = argsMap.GetValueOrDefault("part", "all") == "all";   // --part decode|sampler skips training
    model.train();
    if (trainPart) parts["fwd_loss_s"] = Math.Round(Median(Time(reps, () => { using var s = torch.NewDisposeScope(); LossOf(model.Forward(ids)); })), 3);
    if (trainPart) parts["fwd_loss_bwd_s"] = Math.Round(Median(Time(reps, () => { using var s = torch.NewDisposeScope(); LossOf(model.Forward(ids)).backward(); model.zero_grad(); })), 3);
    if (trainPart)
    using (var hidden = torch.randn(16, 256, config.HiddenSize).requires_grad_(true))
    {
        parts["head_loss_fwd_bwd_s"] = Math.Round(Median(Time(reps, () => { using var s = torch.NewDisposeScope(); LossOf(model.LmHead(hidden)).backward(); model.zero_grad(); })), 3);
        parts["head_matmul_fwd_bwd_s"] = Math.Round(Median(Time(reps, () => { using var s = torch.NewDisposeScope(); model.LmHead(hidden).sum().backward(); model.zero_grad(); })), 3);
    }
    using (torch.no_grad())
    {
        model.eval();
        var prompts = torch.randint(0, config.VocabSize, new long[] { 8, 64 }, dtype: ScalarType.Int64);
        bool decodePart = argsMap.GetValueOrDefault("part", "all") != "sampler";   // --part sampler: op timings only
        if (decodePart) parts["decode_127_forwards_s"] = Math.Round(Median(Time(2, () =>
        {
            using var s = torch.NewDisposeScope();
            using var cache = model.NewCache(192);
            var mask = torch.ones(8, 64, dtype: ScalarType.Int64);
            var next = model.Forward(prompts, mask, cache)[TensorIndex.Colon, -1].argmax(-1, keepdim: true);
            for (int i = 0; i < 127; i++)
            {
                using var inner = torch.NewDisposeScope();
                mask = torch.cat(new[] { mask, torch.ones(8, 1, dtype: ScalarType.Int64) }, 1).MoveToOuterDisposeScope();
                next = model.Forward(next, mask, cache)[TensorIndex.Colon, -1].argmax(-1, keepdim: true).MoveToOuterDisposeScope();
            }
        })), 3);
        var logits = torch.randn(8, config.VocabSize);
        using var gen = new torch.Generator(1);
        if (decodePart) parts["topp_sample_multinomial_scheme_x128_s"] = Math.Round(Median(Time(2, () =>
        {
            for (int i = 0; i < 128; i++)
            {
                using var s = torch.NewDisposeScope();
                var (sorted, order) = logits.sort(-1, descending: true);
                var probs = sorted.softmax(-1);
                var drop = torch.zeros_like(probs, dtype: ScalarType.Bool).scatter(-1, order, (probs.cumsum(-1) - probs).gt(0.9));
                var pick = torch.multinomial(logits.masked_fill(drop, double.NegativeInfinity).softmax(-1), 1, false, gen);
                pick.data<long>().ToArray();
                logits.log_softmax(-1).gather(-1, pick);
            }
        })), 3);
        void Op(string name, Action a) => parts[name + "_x128_ms"] = Math.Round(1000 * Median(Time(2, () => { for (int i = 0; i < 128; i++) { using var s = torch.NewDisposeScope(); a(); } })), 1);
        Op("sort", () => logits.sort(-1, descending: true));
        Op("topk64", () => logits.topk(64, -1));
        Op("softmax", () => logits.softmax(-1));
        Op("log_softmax", () => logits.log_softmax(-1));
        Op("cumsum", () => logits.cumsum(-1));
        Op("multinomial_norepl", () => torch.multinomial(logits.softmax(-1), 1, false, gen));
        Op("multinomial_repl", () => torch.multinomial(logits.softmax(-1), 1, true, gen));
        Op("inverse_cdf", () => torch.searchsorted(logits.softmax(-1).to_type(ScalarType.Float64).cumsum(-1), torch.rand(new long[] { 8, 1 }, ScalarType.Float64, generator: gen), right: true));
        var order0 = logits.argsort(-1);
        Op("scatter", () => torch.zeros_like(logits, dtype: ScalarType.Bool).scatter(-1, order0, logits.gt(0)));
    }
    Report(parts);
}
else
{
    Console.Error.WriteLine($"unknown workload '{workload}' (all, gemm, fwdbwd, dpo, dpo_precomputed, generate, ppo)");
    return 2;
}
return 0;

void ReportStep(string name, List<double> times, int tokens, double flopsPerToken, JsonObject? extra = null)
{
    double med = Median(times);
    double gflops = flopsPerToken * tokens / med / 1e9;
    var o = new JsonObject
    {
        ["workload"] = name, ["tokens_per_step"] = tokens, ["step_s_median"] = Math.Round(med, 4),
        ["step_s_all"] = new JsonArray(times.Select(t => (JsonNode)Math.Round(t, 3)).ToArray()),
        ["tokens_per_s"] = Math.Round(tokens / med, 1), ["gflop_per_step"] = Math.Round(flopsPerToken * tokens / 1e9, 1),
        ["gflops"] = Math.Round(gflops, 1), ["mfu_vs_gemm"] = Math.Round(gflops / gemmPeak, 3),
        ["peak_rss_mb"] = RssMb("VmHWM"), ["baseline_rss_mb"] = baselineMb, ["load_1min"] = LoadAverage(),
    };
    if (extra is not null) foreach (var (k, v) in extra.ToList()) { extra.Remove(k); o[k] = v; }
    Report(o);
}

static List<double> Time(int reps, Action step)
{
    var times = new List<double>();
    for (int r = 0; r < reps + 1; r++)
    {
        var sw = Stopwatch.StartNew();
        step();
        if (r > 0) times.Add(sw.Elapsed.TotalSeconds);   // the first run is warm-up
    }
    return times;
}

static ModelConfig Stories15M(int[]? eos = null) => new()
{
    ModelType = "llama", VocabSize = 32000, HiddenSize = 288, IntermediateSize = 768, NumLayers = 6,
    NumHeads = 6, NumKvHeads = 6, HeadDim = 48, MaxPositionEmbeddings = 256, NormEps = 1e-5,
    RopeTheta = 10000, TieWordEmbeddings = false, EosTokenIds = eos ?? new[] { 2 }, BosTokenId = 1,
};

static long CountParams(ModelConfig c, out long embedding)
{
    using var m = ModelFactory.Create(c, seed: 0);
    embedding = m.named_parameters().Where(p => p.name.EndsWith("embed_tokens.weight")).Sum(p => p.parameter.numel());
    return m.parameters().Sum(p => p.numel());
}

static (double Median, double Best) MeasureGemmPeak(int reps)
{
    // Square fp32 matmuls at two sizes; the peak is the better size's median (the median resists
    // the dips of a shared machine, the better size avoids an unlucky blocking).
    double bestMedian = 0, best = 0;
    foreach (int size in new[] { 1024, 2048 })
    {
        using var a = torch.randn(size, size);
        using var b = torch.randn(size, size);
        torch.matmul(a, b).Dispose();   // warm-up
        var rates = new List<double>();
        for (int r = 0; r < Math.Max(7, reps * 2); r++)
        {
            var sw = Stopwatch.StartNew();
            using var p = a.matmul(b);
            sw.Stop();
            rates.Add(2.0 * size * size * size / sw.Elapsed.TotalSeconds / 1e9);
        }
        bestMedian = Math.Max(bestMedian, Median(rates));
        best = Math.Max(best, rates.Max());
    }
    return (bestMedian, best);
}

static double MeasureCopyBandwidth(int reps)
{
    // 256 MB fp32 copy (far larger than any cache): read + write = 2 × 256 MB per copy.
    const long n = 64L << 20;
    using var src = torch.rand(n);
    using var dst = torch.empty(n);
    dst.copy_(src);
    var rates = new List<double>();
    for (int r = 0; r < Math.Max(7, reps * 2); r++)
    {
        var sw = Stopwatch.StartNew();
        dst.copy_(src);
        sw.Stop();
        rates.Add(2.0 * n * 4 / sw.Elapsed.TotalSeconds / 1e9);
    }
    return Median(rates);
}

static double Median(List<double> xs)
{
    var s = xs.OrderBy(x => x).ToList();
    return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
}

// Linux: VmHWM (peak RSS) and VmRSS from /proc/self/status, in MiB; writing 5 to clear_refs resets VmHWM.
static long RssMb(string field)
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith(field + ":"))
            return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024;
    return -1;
}

static void ResetPeakRss()
{
    try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
}

static double LoadAverage()
{
    try { return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture); }
    catch (IOException) { return -1; }
}

static int RunChild(string w, int reps, int threads)
{
    var psi = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false };
    if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
        psi.ArgumentList.Add(typeof(BenchAnchor).Assembly.Location);
    foreach (var a in new[] { "--workload", w, "--reps", reps.ToString(), "--threads", threads.ToString() })
        psi.ArgumentList.Add(a);
    using var p = Process.Start(psi)!;
    p.WaitForExit();
    return p.ExitCode;
}

static void Report(JsonObject o) => Console.WriteLine(o.ToJsonString());

static Dictionary<string, string> ParseArgs(string[] a)
{
    var d = new Dictionary<string, string>();
    for (int i = 0; i + 1 < a.Length; i += 2) d[a[i].TrimStart('-')] = a[i + 1];
    return d;
}

// Bench-only tokenizer: a "text" is its token ids written as decimal numbers separated by spaces, so
// random-token prompts go through OnlineRlTrainer's text API unchanged. No BOS/EOS; pads with 0.
internal sealed class IdTokenizer(int vocabSize) : TextTokenizer
{
    public override int VocabSize => vocabSize;
    public override int[] Encode(string text) =>
        text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
    public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) => string.Join(' ', ids);
    public override void Save(string folder) =>
        throw new NotSupportedException("the bench id tokenizer is never saved (the bench calls OnlineRlTrainer.Step, not Train)");
}

// Anchor type for locating this assembly from top-level statements.
internal sealed class BenchAnchor { }
