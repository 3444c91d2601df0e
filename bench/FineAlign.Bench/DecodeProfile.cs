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
        torch.set_num_threads(threads);
        var c = new ModelConfig
        {
            ModelType = "llama", VocabSize = 32000, HiddenSize = 288, IntermediateSize = 768, NumLayers = 6,
            NumHeads = 6, NumKvHeads = 6, HeadDim = 48, MaxPositionEmbeddings = 256, NormEps = 1e-5,
            RopeTheta = 10000, TieWordEmbeddings = false, EosTokenIds = new[] { 257 }, BosTokenId = 256, PadTokenId = 258,
        };
        const int promptLen = 64, steps = 127, passes = 3;
        using var model = ModelFactory.Create(c, seed: 0);
        model.eval();
        using var noGrad = torch.no_grad();
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        Tensor W(string suffix) => p.First(kv => kv.Key.EndsWith(suffix, StringComparison.Ordinal)).Value;
        var prompt = torch.randint(0, c.VocabSize, new long[] { batch, promptLen }, dtype: ScalarType.Int64);

        // (a) the real model.
        var real = new Dictionary<string, double> { ["forward_hidden"] = 0, ["lm_head"] = 0, ["greedy_select_and_copy"] = 0 };
        int gc0 = GC.CollectionCount(0), gc1 = GC.CollectionCount(1), gc2 = GC.CollectionCount(2);
        long alloc0 = GC.GetTotalAllocatedBytes(true);
        Tensor? lastLogits = null;
        for (int pass = 0; pass <= passes; pass++)   // pass 0 is the warm-up
        {
            using var cache = model.NewCache(promptLen + steps + 1);
            using var outer = torch.NewDisposeScope();
            var mask = torch.ones(batch, promptLen, dtype: ScalarType.Int64);
            var input = model.Forward(prompt, mask, cache)[TensorIndex.Colon, -1].argmax(-1).unsqueeze(-1);
            for (int s = 0; s < steps; s++)
            {
                using var scope = torch.NewDisposeScope();
                mask = torch.cat(new[] { mask, torch.ones(batch, 1, dtype: ScalarType.Int64) }, 1).MoveToOuterDisposeScope();
                var sw = Stopwatch.StartNew();
                var h = model.ForwardHidden(input, mask, cache);
                double t1 = sw.Elapsed.TotalSeconds;
                var logits = model.LmHead(h)[TensorIndex.Colon, -1];
                double t2 = sw.Elapsed.TotalSeconds;
                var next = logits.argmax(-1);
                var lp = logits.log_softmax(-1).gather(-1, next.unsqueeze(-1));
                var ids = next.data<long>().ToArray(); _ = lp.data<float>().ToArray();
                double t3 = sw.Elapsed.TotalSeconds;
                if (pass > 0) { real["forward_hidden"] += t1; real["lm_head"] += t2 - t1; real["greedy_select_and_copy"] += t3 - t2; }
                input = torch.tensor(ids, new long[] { batch, 1 }).MoveToOuterDisposeScope();
                if (pass == passes && s == steps - 1) lastLogits = logits.clone().DetachFromDisposeScope();
            }
        }
        int n = passes * steps;
        var gcs = new JsonObject
        {
            ["gen0"] = GC.CollectionCount(0) - gc0, ["gen1"] = GC.CollectionCount(1) - gc1, ["gen2"] = GC.CollectionCount(2) - gc2,
            ["managed_bytes_per_step"] = Math.Round((GC.GetTotalAllocatedBytes(true) - alloc0) / (double)((passes + 1) * steps)),
        };

        // (b) the same step, op for op, phase by phase.
        var phase = new Dictionary<string, double>();
        void Add(string k, Stopwatch sw) { phase[k] = phase.GetValueOrDefault(k) + sw.Elapsed.TotalSeconds; sw.Restart(); }
        long hd = c.HeadDim, nh = c.NumHeads, cap = promptLen + steps + 1;
        var inv = Enumerable.Range(0, (int)hd / 2).Select(i => (float)(1.0 / Math.Pow(c.RopeTheta, 2.0 * i / hd))).ToArray();
        var invT = torch.tensor(inv);
        for (int pass = 0; pass <= passes; pass++)
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
        var phaseMs = new JsonObject(); foreach (var kv in phase) phaseMs[kv.Key] = Math.Round(kv.Value / n * 1e3, 3);
        Console.WriteLine(new JsonObject
        {
            ["workload"] = "decode-profile", ["batch"] = batch, ["threads"] = threads, ["steps"] = n,
            ["load_1min"] = File.ReadAllText("/proc/loadavg").Split(' ')[0],
            ["real_ms_per_step"] = realMs, ["real_step_ms_total"] = Math.Round(real.Values.Sum() / n * 1e3, 3),
            ["rebuilt_phase_ms_per_step"] = phaseMs, ["rebuilt_step_ms_total"] = Math.Round(phase.Values.Sum() / n * 1e3, 3),
            ["top_p_sampler"] = sampler, ["gc_over_real_steps"] = gcs,
        }.ToJsonString());
        return 0;
    }
}
