using System.Diagnostics;
using System.Text.Json.Nodes;
using FineAlign.Models;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Issue #18's per-step profile: where one batch-1 decode step of the stories15M shape goes.
///
///   dotnet run -c Release --project bench/FineAlign.Bench -- --workload decode-profile [--batch 1] [--threads 2]
///
/// (a) the real model: ForwardHidden (one token, KV cache), LmHead, greedy selection + the host copy, timed apart;
/// (b) the same step rebuilt op for op from the model's weights with a Stopwatch around each phase (embedding,
///     per-layer norms, q/k/v/o projections, rotary + cache write + attention, MLP; final norm, LM head), so the
///     phases add up to a step comparable with (a); (c) the nucleus sampler: full sort vs the top-k shortcut on
///     the real last-token logits. GC collection counts over (a).
/// </summary>
internal static class DecodeProfile
{
    public static int Run(Dictionary<string, string> args)
    {
        int threads = int.Parse(args.GetValueOrDefault("threads", "2"));
        int batch = int.Parse(args.GetValueOrDefault("batch", "1"));
        bool oldLoop = args.ContainsKey("old-loop");
        var dtype = args.GetValueOrDefault("dtype", "float32") switch
        {
            "float32" or "fp32" => ScalarType.Float32, "bfloat16" or "bf16" => ScalarType.BFloat16,
            var other => throw new ArgumentException($"--dtype {other}: float32 or bfloat16"),
        };
        torch.set_num_threads(threads);
        var c = new ModelConfig
        {
            ModelType = "llama", VocabSize = 32000, HiddenSize = 288, IntermediateSize = 768, NumLayers = 6,
            NumHeads = 6, NumKvHeads = 6, HeadDim = 48, MaxPositionEmbeddings = 256, NormEps = 1e-5,
            RopeTheta = 10000, TieWordEmbeddings = false, EosTokenIds = new[] { 257 }, BosTokenId = 256, PadTokenId = 258,
        };
        const int promptLen = 64, steps = 127, passes = 3;
        using var model = ModelFactory.Create(c, seed: 0, dtype);
        model.eval();
        using var noGrad = torch.no_grad();
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        Tensor W(string suffix) => p.First(kv => kv.Key.EndsWith(suffix, StringComparison.Ordinal)).Value;
        var prompt = torch.randint(0, c.VocabSize, new long[] { batch, promptLen }, dtype: ScalarType.Int64);

        // (a) the real model. Passes alternate the decode layout (KvCache.DecodeLayout: Wᵀ copies for the LM head and the
        // fused q/k/v and gate/up matmuls, TransposedWeight) on and off: two warm-ups, then `passes` of each, interleaved.
        var real = new Dictionary<string, double> { ["forward_hidden"] = 0, ["lm_head"] = 0, ["greedy_select_and_copy"] = 0 };
        var realOff = new Dictionary<string, double> { ["forward_hidden"] = 0, ["lm_head"] = 0, ["greedy_select_and_copy"] = 0 };
        var stepByLayout = new Dictionary<string, List<double>> { ["transposed"] = new(), ["linear"] = new() };
        int gc0 = GC.CollectionCount(0), gc1 = GC.CollectionCount(1), gc2 = GC.CollectionCount(2);
        long alloc0 = GC.GetTotalAllocatedBytes(true);
        Tensor? lastLogits = null;
        int totalPasses = 2 * passes + 2;
        for (int pass = 0; pass < totalPasses; pass++)   // the first two warm up
        {
            bool layoutOff = pass % 2 == 1;
            bool timed = pass >= 2;
            var into = layoutOff ? realOff : real;
            double passStep = 0;
            using var cache = model.NewCache(promptLen + steps + 1);
            cache.DecodeLayout = !layoutOff;
            using var outer = torch.NewDisposeScope();
            var mask = torch.ones(batch, promptLen, dtype: ScalarType.Int64);
            var input = model.Forward(prompt, mask, cache)[TensorIndex.Colon, -1].argmax(-1).unsqueeze(-1);
            for (int s = 0; s < steps; s++)
            {
                using var scope = torch.NewDisposeScope();
                // As TextGenerator: --old-loop passes the grown mask every step (the loop before issue #18's second
                // step); otherwise the cache carries positions and padding and steps pass no mask.
                Tensor? stepMask = null;
                if (oldLoop) { mask = torch.cat(new[] { mask, torch.ones(batch, 1, dtype: ScalarType.Int64) }, 1).MoveToOuterDisposeScope(); stepMask = mask; }
                var sw = Stopwatch.StartNew();
                var h = model.ForwardHidden(input, stepMask, cache);
                double t1 = sw.Elapsed.TotalSeconds;
                var logits = model.DecodeLmHead(h, cache)[TensorIndex.Colon, -1];
                double t2 = sw.Elapsed.TotalSeconds;
                var next = logits.argmax(-1);
                var lp = logits.log_softmax(-1).gather(-1, next.unsqueeze(-1));
                var ids = next.data<long>().ToArray(); _ = lp.to_type(ScalarType.Float32).data<float>().ToArray();
                double t3 = sw.Elapsed.TotalSeconds;
                if (timed) { into["forward_hidden"] += t1; into["lm_head"] += t2 - t1; into["greedy_select_and_copy"] += t3 - t2; }
                passStep += t3;
                input = torch.tensor(ids, new long[] { batch, 1 }).MoveToOuterDisposeScope();
                if (pass == totalPasses - 1 && s == steps - 1) lastLogits = logits.to_type(ScalarType.Float32).clone().DetachFromDisposeScope();
            }
            if (timed) stepByLayout[layoutOff ? "linear" : "transposed"].Add(passStep / steps * 1e3);
        }
        int n = passes * steps;
        var gcs = new JsonObject
        {
            ["gen0"] = GC.CollectionCount(0) - gc0, ["gen1"] = GC.CollectionCount(1) - gc1, ["gen2"] = GC.CollectionCount(2) - gc2,
            ["managed_bytes_per_step"] = Math.Round((GC.GetTotalAllocatedBytes(true) - alloc0) / (double)(totalPasses * steps)),
        };

        // (b) the same step, op for op, phase by phase.
        var phase = new Dictionary<string, double>();
        void Add(string k, Stopwatch sw) { phase[k] = phase.GetValueOrDefault(k) + sw.Elapsed.TotalSeconds; sw.Restart(); }
        long hd = c.HeadDim, nh = c.NumHeads, cap = promptLen + steps + 1;
        var inv = Enumerable.Range(0, (int)hd / 2).Select(i => (float)(1.0 / Math.Pow(c.RopeTheta, 2.0 * i / hd))).ToArray();
        var invT = torch.tensor(inv);
        for (int pass = 0; pass <= (dtype == ScalarType.Float32 ? passes : -1); pass++)   // the rebuilt step is fp32 only
        {
            var kc = Enumerable.Range(0, c.NumLayers).Select(_ => torch.randn(batch, nh, cap, hd)).ToArray();
            var vc = Enumerable.Range(0, c.NumLayers).Select(_ => torch.randn(batch, nh, cap, hd)).ToArray();
            var ids = torch.randint(0, c.VocabSize, new long[] { batch, 1 }, dtype: ScalarType.Int64);
            for (int s = 0; s < steps; s++)
            {
                using var scope = torch.NewDisposeScope();
                int pos = promptLen + s;
                var sw = Stopwatch.StartNew();
                var x = W("embed_tokens.weight").index_select(0, ids.view(-1)).view(batch, 1, -1); Add("embedding", sw);
                var freqs = torch.tensor(new float[] { pos }).unsqueeze(-1) * invT;
                var emb = torch.cat(new[] { freqs, freqs }, -1);
                var cos = emb.cos(); var sin = emb.sin(); Add("rotary_tables", sw);
                for (int l = 0; l < c.NumLayers; l++)
                {
                    string pre = $"layers.{l}.";
                    Tensor Norm(Tensor t, string w) => t * (t.pow(2).mean(new long[] { -1 }, keepdim: true) + c.NormEps).rsqrt() * W(pre + w);
                    var hN = Norm(x, "input_layernorm.weight"); Add("norms", sw);
                    var q = nn.functional.linear(hN, W(pre + "self_attn.q_proj.weight")).view(batch, 1, nh, hd).transpose(1, 2);
                    var k = nn.functional.linear(hN, W(pre + "self_attn.k_proj.weight")).view(batch, 1, nh, hd).transpose(1, 2);
                    var v = nn.functional.linear(hN, W(pre + "self_attn.v_proj.weight")).view(batch, 1, nh, hd).transpose(1, 2); Add("qkv_proj", sw);
                    Tensor Rot(Tensor t) { var a = t.narrow(-1, 0, hd / 2); var b = t.narrow(-1, hd / 2, hd / 2); return t * cos + torch.cat(new[] { b.neg(), a }, -1) * sin; }
                    q = Rot(q); k = Rot(k); Add("rotary_apply", sw);
                    kc[l][TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Slice(pos, pos + 1)] = k;
                    vc[l][TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Slice(pos, pos + 1)] = v;
                    var kAll = kc[l][TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Slice(0, pos + 1)];
                    var vAll = vc[l][TensorIndex.Colon, TensorIndex.Colon, TensorIndex.Slice(0, pos + 1)]; Add("kv_cache_write", sw);
                    var o = nn.functional.scaled_dot_product_attention(q, kAll, vAll); Add("attention", sw);
                    x = x + nn.functional.linear(o.transpose(1, 2).reshape(batch, 1, nh * hd), W(pre + "self_attn.o_proj.weight")); Add("o_proj_residual", sw);
                    var h2 = Norm(x, "post_attention_layernorm.weight"); Add("norms", sw);
                    var g = nn.functional.linear(h2, W(pre + "mlp.gate_proj.weight"));
                    var u = nn.functional.linear(h2, W(pre + "mlp.up_proj.weight")); Add("gate_up_proj", sw);
                    var act = nn.functional.silu(g) * u; Add("silu_mul", sw);
                    x = x + nn.functional.linear(act, W(pre + "mlp.down_proj.weight")); Add("down_proj_residual", sw);
                }
                var hf = x * (x.pow(2).mean(new long[] { -1 }, keepdim: true) + c.NormEps).rsqrt() * W("norm.weight"); Add("norms", sw);
                var lg = nn.functional.linear(hf, W("lm_head.weight")); Add("lm_head", sw);
                _ = lg.argmax(-1).data<long>().ToArray(); Add("greedy_select_and_copy", sw);
                if (pass == 0) phase.Clear();
            }
            foreach (var t in kc.Concat(vc)) t.Dispose();
        }

        // (c) nucleus sampler on the real logits (temperature 1, top-p 0.9): old full sort vs the shortcut.
        var sampler = new JsonObject();
        var rows = lastLogits!.expand(batch, -1).contiguous();
        foreach (var (name, full) in new[] { ("sort_full_vocab", true), ("topk_shortcut_256", false) })
        {
            var times = new List<double>();
            using var gen = new torch.Generator(1);
            for (int r = 0; r < 200; r++)
            {
                using var scope = torch.NewDisposeScope();
                var sw = Stopwatch.StartNew();
                var logp = rows.log_softmax(-1);
                var probs = rows.softmax(-1);
                var (sorted, order) = full ? probs.sort(-1, descending: true) : probs.topk(256, -1);
                if (!full) _ = sorted.cumsum(-1)[TensorIndex.Colon, -2].gt(0.9).all().item<bool>();
                var kept = sorted.masked_fill((sorted.cumsum(-1) - sorted).gt(0.9), 0.0);
                var cdf = kept.to_type(ScalarType.Float64).cumsum(-1);
                var tot = cdf[TensorIndex.Colon, TensorIndex.Slice(-1, null)];
                var uu = torch.rand(new long[] { batch, 1 }, ScalarType.Float64, generator: gen) * tot;
                var idx = order.gather(-1, torch.searchsorted(cdf, uu, right: true)).squeeze(-1);
                _ = logp.gather(-1, idx.unsqueeze(-1)).data<float>().ToArray();
                if (r >= 20) times.Add(sw.Elapsed.TotalSeconds);
            }
            times.Sort();
            sampler[name + "_ms_median"] = Math.Round(times[times.Count / 2] * 1e3, 3);
        }

        var realMs = new JsonObject(); foreach (var kv in real) realMs[kv.Key] = Math.Round(kv.Value / n * 1e3, 3);
        var realOffMs = new JsonObject(); foreach (var kv in realOff) realOffMs[kv.Key] = Math.Round(kv.Value / n * 1e3, 3);
        var phaseMs = new JsonObject(); foreach (var kv in phase) phaseMs[kv.Key] = Math.Round(kv.Value / n * 1e3, 3);
        Console.WriteLine(new JsonObject
        {
            ["workload"] = "decode-profile", ["batch"] = batch, ["threads"] = threads, ["steps"] = n,
            ["dtype"] = dtype.ToString(), ["loop"] = oldLoop ? "mask every step" : "cache positions, no mask",
            ["load_1min"] = File.ReadAllText("/proc/loadavg").Split(' ')[0],
            ["real_ms_per_step"] = realMs, ["real_step_ms_total"] = Math.Round(real.Values.Sum() / n * 1e3, 3),
            ["real_ms_per_step_decode_layout_off"] = realOffMs, ["real_step_ms_total_decode_layout_off"] = Math.Round(realOff.Values.Sum() / n * 1e3, 3),
            ["step_ms_by_pass"] = new JsonObject
            {
                ["decode_layout_transposed"] = new JsonArray(stepByLayout["transposed"].Select(x => (JsonNode)Math.Round(x, 3)).ToArray()),
                ["decode_layout_off_linear"] = new JsonArray(stepByLayout["linear"].Select(x => (JsonNode)Math.Round(x, 3)).ToArray()),
            },
            ["rebuilt_phase_ms_per_step"] = phaseMs, ["rebuilt_step_ms_total"] = Math.Round(phase.Values.Sum() / n * 1e3, 3),
            ["top_p_sampler"] = sampler, ["gc_over_real_steps"] = gcs,
        }.ToJsonString());
        return 0;
    }
}

/// <summary>
/// <c>--dtype bfloat16</c> decoding against fp32 (issue #18), one process:
///
///   dotnet run -c Release --project bench/FineAlign.Bench -- --workload decode-dtype [--reps 3] [--threads 2]
///
/// The stories15M-shape model of decode-peer in fp32 and the same weights rounded to bf16 (ModelFactory draws in fp32,
/// then casts: half the bytes per step). Speed: TextGenerator greedy, 64-token prompts, 128 new tokens, batch 1 and 8,
/// the two dtypes alternating, median of ≥ 3 after a warm-up. Error: the fp32 model's greedy continuations are scored
/// teacher-forced by both models (one full forward each, log_softmax in fp32): |log p_bf16 − log p_fp32| per token,
/// and how many greedy tokens the bf16 decoder reproduces before its first divergence.
/// </summary>
internal static class DecodeDtype
{
    public static int Run(Dictionary<string, string> args)
    {
        int threads = int.Parse(args.GetValueOrDefault("threads", "2"));
        int reps = Math.Max(3, int.Parse(args.GetValueOrDefault("reps", "3")));
        torch.set_num_threads(threads);
        var c = new ModelConfig
        {
            ModelType = "llama", VocabSize = 32000, HiddenSize = 288, IntermediateSize = 768, NumLayers = 6,
            NumHeads = 6, NumKvHeads = 6, HeadDim = 48, MaxPositionEmbeddings = 256, NormEps = 1e-5,
            RopeTheta = 10000, TieWordEmbeddings = false, EosTokenIds = new[] { 257 }, BosTokenId = 256, PadTokenId = 258,
        };
        using var fp32 = ModelFactory.Create(c, seed: 0);
        using var bf16 = ModelFactory.Create(c, seed: 0, ScalarType.BFloat16);
        fp32.eval(); bf16.eval();
        foreach (int batch in new[] { 1, 8 })
        {
            var rng = new Random(batch);
            var prompts = Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, 64).Select(_ => rng.Next(c.VocabSize)).ToArray()).ToList();
            var o = new FineAlign.Generation.GenerationOptions { MaxNewTokens = 128, DoSample = false, EosTokenIds = Array.Empty<int>() };
            IReadOnlyList<FineAlign.Generation.GeneratedSequence>? r32 = null, r16 = null;
            void Run32() => r32 = FineAlign.Generation.TextGenerator.Generate(fp32, prompts, o);
            void Run16() => r16 = FineAlign.Generation.TextGenerator.Generate(bf16, prompts, o);
            Run32(); Run16();
            var t32 = new List<double>(); var t16 = new List<double>();
            for (int r = 0; r < reps; r++)
            {
                if (r % 2 == 0) { t16.Add(Time(Run16)); t32.Add(Time(Run32)); }
                else { t32.Add(Time(Run32)); t16.Add(Time(Run16)); }
            }

            // Teacher-forced log-probs of the fp32 continuations under both models.
            using var scope = torch.NewDisposeScope();
            using var noGrad = torch.no_grad();
            var seqs = r32!.Select(g => g.PromptIds.Concat(g.Tokens).Select(x => (long)x).ToArray()).ToArray();
            var ids = torch.tensor(seqs.SelectMany(x => x).ToArray(), new long[] { batch, seqs[0].Length });
            Tensor LogProbs(CausalLM m)
            {
                var logits = m.Forward(ids).to_type(ScalarType.Float32).narrow(1, 63, 128);
                return logits.log_softmax(-1).gather(-1, ids.narrow(1, 64, 128).unsqueeze(-1)).squeeze(-1);
            }
            var diff = (LogProbs(bf16) - LogProbs(fp32)).abs();
            int agree = Enumerable.Range(0, batch).Min(i => r32[i].Tokens.Zip(r16![i].Tokens).TakeWhile(p => p.First == p.Second).Count());
            double m32 = Median(t32), m16 = Median(t16);
            Console.WriteLine(new JsonObject
            {
                ["workload"] = "decode-dtype", ["batch"] = batch, ["threads"] = threads, ["reps"] = reps,
                ["fp32_new_tok_s"] = Math.Round(batch * 128 / m32, 1), ["bf16_new_tok_s"] = Math.Round(batch * 128 / m16, 1),
                ["bf16_speedup"] = Math.Round(m32 / m16, 3),
                ["fp32_call_s_all"] = new JsonArray(t32.Select(x => (JsonNode)Math.Round(x, 3)).ToArray()),
                ["bf16_call_s_all"] = new JsonArray(t16.Select(x => (JsonNode)Math.Round(x, 3)).ToArray()),
                ["logprob_abs_err_max"] = Math.Round(diff.max().item<float>(), 5), ["logprob_abs_err_mean"] = Math.Round(diff.mean().item<float>(), 5),
                ["greedy_tokens_equal_before_first_divergence_min_over_rows"] = agree,
                ["weight_mb_fp32"] = Math.Round(fp32.parameters().Sum(p => p.numel()) * 4 / 1e6, 1),
                ["weight_mb_bf16"] = Math.Round(bf16.parameters().Sum(p => p.numel() * p.ElementSize) / 1e6, 1),
                ["load_1min"] = File.ReadAllText("/proc/loadavg").Split(' ')[0],
            }.ToJsonString());
        }
        return 0;
    }

    private static double Time(Action a) { var sw = Stopwatch.StartNew(); a(); return sw.Elapsed.TotalSeconds; }
    private static double Median(List<double> xs) { var s = xs.OrderBy(x => x).ToList(); return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2; }
}
