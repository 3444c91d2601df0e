using System.Diagnostics;
using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Rewards;
using FineAlign.Text;
using FineAlign.Trainers;
using FineAlign.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

/// <summary>
/// Issue #15 benchmarks (real-scale training on one machine), each in its own process so peak RSS is its own:
///   rs_bf16    bf16 mixed precision vs fp32 forward+backward on the stories15M shape, interleaved in one process, MFU
///              against this process's bf16 and fp32 GEMM medians.
///   rs_dpo     one DPO step on the qwen2.5-0.5b shape, --variant full | chunked | lora | bf16 | ckpt (each adds one feature
///              to the previous), --pairs P --length T; step time and peak RSS.
///   rs_ppo     one PPO iteration with LoRA at the smollm2-135m shape (OnlineRlTrainer; policy, adapter-off reference,
///              value head and reward head on one base), --batch B --prompt P --new N; phases and peak RSS.
///   rs_bf16_profile  where the bf16 fwd+bwd time goes (GEMMs at the model's shapes, trunk, chunked head, non-GEMM ops).
///   rs_all     all of the above, one child process each.
/// --allocator default (glibc's own, as the CLI without flags) | return (HostAllocator: the CLI's --release-freed-memory, mmap threshold 4 MiB).
/// FLOPs as in Program.cs: fwd+bwd = 6·N' + 12·L·d·T per token (N' = parameters in matmuls: all but the input embedding).
/// </summary>
internal static class RealScaleBench
{
    public static int Run(string workload, Dictionary<string, string> a, int reps, int threads)
    {
        // --allocator default (glibc's dynamic threshold, as the CLI) | return (HostAllocator, the CLI's --release-freed-memory), before any tensor.
        string allocator = a.GetValueOrDefault("allocator", "default");
        if (allocator == "return") HostAllocator.ReturnFreedMemory();
        torch.set_num_threads(threads);
        torch.manual_seed(0);
        if (workload == "rs_all")
        {
            int rc = Child(["--workload", "rs_bf16"], reps, threads);
            foreach (var v in new[] { "full", "chunked", "lora", "bf16", "ckpt" })
                rc |= Child(["--workload", "rs_dpo", "--variant", v, "--pairs", a.GetValueOrDefault("pairs", "1"), "--length", a.GetValueOrDefault("length", "256")], reps, threads);
            rc |= Child(["--workload", "rs_dpo", "--variant", "ckpt", "--pairs", "4", "--length", "512"], reps, threads);
            rc |= Child(["--workload", "rs_ppo"], reps, threads);
            return rc;
        }
        var (fp32Gemm, bf16Gemm) = (Gemm(ScalarType.Float32, 5), Gemm(ScalarType.BFloat16, 5));
        Report(new JsonObject
        {
            ["workload"] = "machine", ["gemm_fp32_gflops_median"] = Math.Round(fp32Gemm, 1), ["gemm_bf16_gflops_median"] = Math.Round(bf16Gemm, 1),
            ["bf16_over_fp32_gemm"] = Math.Round(bf16Gemm / fp32Gemm, 2), ["cpu_native_bf16"] = ModelSetup.CpuHasBf16(), ["load_1min"] = Load(),
            ["allocator"] = HostAllocator.State,
        });
        ResetPeak();
        long baseline = Rss("VmRSS");
        return workload switch
        {
            "rs_bf16" => Bf16FwdBwd(reps, fp32Gemm, bf16Gemm, baseline),
            "rs_ppo" => PpoLora(reps, int.Parse(a.GetValueOrDefault("batch", "8")), int.Parse(a.GetValueOrDefault("prompt", "64")),
                int.Parse(a.GetValueOrDefault("new", "128")), fp32Gemm, baseline),
            "rs_bf16_profile" => Bf16Profile(reps, int.Parse(a.GetValueOrDefault("batch", "16")), int.Parse(a.GetValueOrDefault("length", "256"))),
            "rs_dpo" => Dpo(a.GetValueOrDefault("variant", "ckpt"), int.Parse(a.GetValueOrDefault("pairs", "1")), int.Parse(a.GetValueOrDefault("length", "256")), reps, baseline,
                a.TryGetValue("layers", out var layers) ? int.Parse(layers) : null),
            _ => throw new ArgumentException($"unknown workload {workload}"),
        };
    }

    private static ModelConfig Stories15M() => new()
    {
        ModelType = "llama", VocabSize = 32000, HiddenSize = 288, IntermediateSize = 768, NumLayers = 6, NumHeads = 6, NumKvHeads = 6,
        HeadDim = 48, MaxPositionEmbeddings = 256, NormEps = 1e-5, TieWordEmbeddings = false,
    };

    private static long MatmulParams(CausalLM m) => m.named_parameters().Where(p => !p.name.Contains("embed_tokens") || m.Config.TieWordEmbeddings)
        .Sum(p => p.parameter.numel());

    private static int Bf16FwdBwd(int reps, double fp32Gemm, double bf16Gemm, long baseline)
    {
        const int batch = 16, len = 256;
        var config = Stories15M();
        using var fp32 = ModelFactory.Create(config, 0);
        using var bf16 = ModelFactory.Create(config, 0);
        ModelSetup.Prepare(bf16, new TrainingOptions { Bf16 = true }, null, 0);
        fp32.train(); bf16.train();
        long n = MatmulParams(fp32);
        double flopsPerToken = 6.0 * n + 12.0 * config.NumLayers * config.HiddenSize * len;
        var ids = randint(0, config.VocabSize, new long[] { batch, len });
        var mask = ones(batch, len, ScalarType.Bool);
        float castOnceLoss = 0, perUseLoss = 0;
        // castOnce: one optimizer step's fwd+bwd inside MasterCast.Step (as the trainers run it: each fp32 master cast to
        // bf16 once per step); otherwise every use re-casts (each projection once, the LM head twice per chunk).
        double Step(CausalLM m, bool castOnce = false)
        {
            var sw = Stopwatch.StartNew();
            using var scope = NewDisposeScope();
            using (castOnce ? MasterCast.Step() : null)
            {
                var loss = CausalLmLoss.Loss(m, ids, null, mask);
                loss.backward();
                if (ReferenceEquals(m, bf16)) { if (castOnce) castOnceLoss = loss.item<float>(); else perUseLoss = loss.item<float>(); }
            }
            m.zero_grad();
            return sw.Elapsed.TotalSeconds;
        }
        Step(fp32); Step(bf16); Step(bf16, castOnce: true);   // warm-up
        var t32 = new List<double>(); var t16 = new List<double>(); var t16Once = new List<double>();
        double loss32 = 0, loss16 = 0;
        for (int r = 0; r < reps; r++) { t32.Add(Step(fp32)); t16.Add(Step(bf16)); t16Once.Add(Step(bf16, castOnce: true)); }
        using (no_grad()) { loss32 = CausalLmLoss.Loss(fp32, ids, null, mask).item<float>(); loss16 = CausalLmLoss.Loss(bf16, ids, null, mask).item<float>(); }
        double m32 = Median(t32), m16 = Median(t16), tokens = batch * len;
        Report(new JsonObject
        {
            ["workload"] = "rs_bf16", ["shape"] = "stories15M", ["batch"] = $"{batch}x{len}",
            ["fp32_s_median"] = Math.Round(m32, 3), ["bf16_s_median"] = Math.Round(m16, 3),
            ["fp32_s_all"] = Arr(t32), ["bf16_s_all"] = Arr(t16),
            ["fp32_tokens_per_s"] = Math.Round(tokens / m32, 1), ["bf16_tokens_per_s"] = Math.Round(tokens / m16, 1),
            ["bf16_speedup"] = Math.Round(m32 / m16, 2),
            ["bf16_cast_once_s_median"] = Math.Round(Median(t16Once), 3), ["bf16_cast_once_s_all"] = Arr(t16Once),
            ["bf16_cast_once_speedup_over_per_use"] = Math.Round(m16 / Median(t16Once), 3),
            ["bf16_cast_once_speedup_over_fp32"] = Math.Round(m32 / Median(t16Once), 2),
            ["bf16_cast_once_same_loss"] = castOnceLoss == perUseLoss,
            ["fp32_mfu_vs_fp32_gemm"] = Math.Round(tokens * flopsPerToken / m32 / 1e9 / fp32Gemm, 3),
            ["bf16_mfu_vs_bf16_gemm"] = Math.Round(tokens * flopsPerToken / m16 / 1e9 / bf16Gemm, 3),
            ["loss_fp32"] = Math.Round(loss32, 5), ["loss_bf16"] = Math.Round(loss16, 5),
            ["peak_rss_mb"] = Rss("VmHWM"), ["baseline_rss_mb"] = baseline, ["load_1min"] = Load(),
        });
        return 0;
    }

    /// <summary>
    /// Where bf16 forward+backward time goes on the stories15M shape, each part timed fp32 and bf16 interleaved in this
    /// process (medians): GEMMs at the model's own shapes, the trunk (embedding → final norm) forward+backward, the chunked
    /// LM head + loss forward+backward from fixed hidden states, and the non-GEMM pieces (RMSNorm, attention, SwiGLU
    /// product, the per-forward weight casts). Ratios only: absolute times on a shared machine are not comparable.
    /// </summary>
    private static int Bf16Profile(int reps, int batch, int len)
    {
        var config = Stories15M();
        using var fp32 = ModelFactory.Create(config, 0);
        using var bf16 = ModelFactory.Create(config, 0);
        ModelSetup.Prepare(bf16, new TrainingOptions { Bf16 = true }, null, 0);
        fp32.train(); bf16.train();
        long m = (long)batch * len;
        int h = config.HiddenSize, inter = config.IntermediateSize, v = config.VocabSize, heads = config.NumHeads, hd = config.HeadDim;
        var ids = randint(0, v, new long[] { batch, len });
        var mask = ones(batch, len, ScalarType.Bool);
        var result = new JsonObject { ["workload"] = "rs_bf16_profile", ["shape"] = "stories15M", ["batch"] = $"{batch}x{len}" };
        void Pair(string name, Func<ScalarType, Action> make, double flops = 0)
        {
            var f32 = make(ScalarType.Float32); var f16 = make(ScalarType.BFloat16);
            f32(); f16();
            var t32 = new List<double>(); var t16 = new List<double>();
            for (int r = 0; r < reps; r++)
            {
                var sw = Stopwatch.StartNew(); f32(); t32.Add(sw.Elapsed.TotalSeconds);
                sw.Restart(); f16(); t16.Add(sw.Elapsed.TotalSeconds);
            }
            double a = Median(t32), b = Median(t16);
            var o = new JsonObject { ["fp32_ms"] = Math.Round(a * 1e3, 2), ["bf16_ms"] = Math.Round(b * 1e3, 2), ["bf16_speedup"] = Math.Round(a / b, 2) };
            if (flops > 0) { o["fp32_gflops"] = Math.Round(flops / a / 1e9, 1); o["bf16_gflops"] = Math.Round(flops / b / 1e9, 1); }
            result[name] = o;
            Console.Error.WriteLine($"rs_bf16_profile: {name} {o.ToJsonString()}");
        }
        Action Gemm(ScalarType dt, long rows, long k, long n)
        {
            var x = randn(rows, k).to(dt); var w = randn(n, k).to(dt);
            return () => { using var _ = no_grad(); F.linear(x, w).Dispose(); };
        }
        Pair("gemm_qkvo_288x288", dt => Gemm(dt, m, h, h), 2.0 * m * h * h);
        Pair("gemm_gate_up_288x768", dt => Gemm(dt, m, h, inter), 2.0 * m * h * inter);
        Pair("gemm_down_768x288", dt => Gemm(dt, m, inter, h), 2.0 * m * inter * h);
        Pair("gemm_lm_head_chunk_1024x288x32000", dt => Gemm(dt, 1024, h, v), 2.0 * 1024 * h * v);
        Action Model(ScalarType dt, bool head)
        {
            var model = dt == ScalarType.Float32 ? fp32 : bf16;
            return () =>
            {
                using var scope = NewDisposeScope();
                if (head)
                {
                    // Chunked LM head + loss from fixed hidden states (what the trunk hands over), forward + backward.
                    var hidden = randn(batch, len, h).to(dt).requires_grad_(true);
                    var logp = ChunkedLmHead.TokenLogProbs(model, hidden, ids, mask);
                    logp.mean().neg().backward();
                }
                else
                {
                    var hidden = model.ForwardHidden(ids, null);
                    (hidden.to(ScalarType.Float32) * 1e-3).sum().backward();
                }
                model.zero_grad();
            };
        }
        long nLayers = MatmulParams(fp32) - (long)v * h;   // the trunk's matmul parameters (the head is untied here)
        Pair("trunk_fwd_bwd", dt => Model(dt, false), 6.0 * m * nLayers + 12.0 * config.NumLayers * h * len * m);
        Pair("chunked_head_loss_fwd_bwd", dt => Model(dt, true), 6.0 * m * h * v);
        Action Elementwise(ScalarType dt, string what)
        {
            var norm = new RMSNorm(h, 1e-5);
            var x = randn(batch, len, h).to(dt).requires_grad_(true);
            var q = randn(batch, heads, len, hd).to(dt).requires_grad_(true);
            var g = randn(batch, len, inter).to(dt).requires_grad_(true);
            var u = randn(batch, len, inter).to(dt).requires_grad_(true);
            var w = randn(v, h).requires_grad_(true);
            return () =>
            {
                using var scope = NewDisposeScope();
                Tensor y = what switch
                {
                    "rmsnorm" => norm.forward(x),
                    "attention" => F.scaled_dot_product_attention(q, q, q, is_casual: true),
                    "swiglu_product" => F.silu(g) * u,
                    "weight_cast_lm_head" => w.to(dt),
                    _ => throw new ArgumentException(what),
                };
                y.to(ScalarType.Float32).sum().backward();
                x.grad?.zero_(); q.grad?.zero_(); g.grad?.zero_(); u.grad?.zero_(); w.grad?.zero_();
            };
        }
        foreach (var what in new[] { "rmsnorm", "attention", "swiglu_product", "weight_cast_lm_head" })
            Pair($"{what}_fwd_bwd", dt => Elementwise(dt, what));
        result["load_1min"] = Load();
        Report(result);
        return 0;
    }

    /// <summary>
    /// One PPO iteration with LoRA at the smollm2-135m shape through <see cref="OnlineRlTrainer"/>: policy = base + LoRA
    /// r 16 on the 7 projections, reference = the same base with the adapters off, value head on the policy's trunk, and a
    /// reward model that is a sequence head on the adapter-off base: four roles, one copy of the 135M weights. Phase
    /// times from <see cref="OnlineRlTrainer.LastStepSeconds"/>, peak RSS against the weights.
    /// </summary>
    private static int PpoLora(int reps, int batch, int promptLen, int newTokens, double fp32Gemm, long baseline)
    {
        var tok = new IdTokenizer(49152);   // no EOS: every row runs to newTokens
        var config = ModelPresets.Create("smollm2-135m", tok, promptLen + newTokens);
        using var policy = ModelFactory.Create(config, 0);
        ModelSetup.Prepare(policy, new TrainingOptions(), new LoraSettings { R = 16, Alpha = 32, Dropout = 0.05 }, 0);
        var reference = ModelSetup.Reference(policy)!;
        using var value = ValueModel.Shared(policy, 1);
        var head = nn.Linear(config.HiddenSize, 1);
        var prompts = Enumerable.Range(0, batch).Select(_ => string.Join(' ',
            randint(3, config.VocabSize, new long[] { promptLen }, dtype: ScalarType.Int64).data<long>().ToArray())).ToList();
        var reward = new SequenceRewardSource("rm_on_base", rb =>
        {
            // A reward model on the shared frozen base: a sequence head at each response's last token.
            var promptIds = stack(rb.PromptTexts!.Select(p => tensor(tok.Encode(p).Select(x => (long)x).ToArray())).ToArray());
            var ids = cat(new[] { promptIds, rb.ResponseIds.to(ScalarType.Int64) }, 1);
            var attn = cat(new[] { ones(promptIds.shape, ScalarType.Int64), rb.ResponseMask.to(ScalarType.Int64) }, 1);
            var hidden = reference.ForwardHidden(ids, attn);
            var last = rb.ResponseMask.sum(1).to(ScalarType.Int64) + (promptIds.shape[1] - 1);
            return head.forward(hidden[arange(hidden.shape[0]), last].to(ScalarType.Float32)).squeeze(-1);
        });
        long weights = policy.parameters().Where(p => !p.requires_grad).Sum(p => p.numel() * p.element_size());
        long adapter = policy.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        GC.Collect(); GC.WaitForPendingFinalizers();
        long setupPeak = Rss("VmHWM");
        ResetPeak();                                         // from here on the peak is the iterations' own
        var trainer = new OnlineRlTrainer(policy, reference, value, tok, reward, prompts, OnlineRlOptions.Ppo with
        {
            OutputDir = Path.Combine(Path.GetTempPath(), "finealign-bench-rs-ppo"), Steps = 1000, BatchSize = batch, MiniBatchSize = batch,
            Epochs = 1, LearningRate = 1e-5, MaxNewTokens = newTokens, Temperature = 1.0, TopP = 0.9, KlCoef = 0.05,
        }) { WriteTensorBoard = false };
        var phases = new Dictionary<string, List<double>> { ["generation"] = new(), ["scoring"] = new(), ["update"] = new() };
        var totals = new List<double>();
        Dictionary<string, double> last = new();
        for (int r = 0; r < reps + 1; r++)
        {
            var sw = Stopwatch.StartNew();
            last = trainer.Step(r + 1);
            Console.Error.WriteLine($"rs_ppo: iteration {r}: {sw.Elapsed.TotalSeconds:F1} s ({string.Join(", ", trainer.LastStepSeconds.Select(kv => $"{kv.Key} {kv.Value:F1} s"))}); peak {Rss("VmHWM")} MB");
            if (r == 0) continue;   // warm-up (also allocates AdamW's state)
            totals.Add(sw.Elapsed.TotalSeconds);
            foreach (var (k, v) in trainer.LastStepSeconds) phases[k].Add(v);
        }
        long peak = Rss("VmHWM");
        long tokens = (long)batch * (promptLen + newTokens);
        // Model FLOPs (Program.cs accounting, N' = all matmul parameters of the tied base, LM head included once):
        // scoring = policy + reference + reward forwards (the value head shares the policy pass); update = policy forward
        // + backward (LoRA: activation gradients only, ≈ 2·N'); generation = prefill + decode forwards.
        double n = MatmulParams(policy) - adapter, attn = 4.0 * config.NumLayers * config.HiddenSize * (promptLen + newTokens);
        double scoreFlops = tokens * 3 * (2 * n + attn), updateFlops = tokens * (4 * n + 3 * attn);
        JsonObject Phase(string name, double flops)
        {
            double med = Median(phases[name]);
            var o = new JsonObject { ["s_median"] = Math.Round(med, 2), ["s_all"] = Arr(phases[name]) };
            if (flops > 0) { o["gflops"] = Math.Round(flops / med / 1e9, 1); o["mfu_vs_fp32_gemm"] = Math.Round(flops / med / 1e9 / fp32Gemm, 3); }
            return o;
        }
        Report(new JsonObject
        {
            ["workload"] = "rs_ppo", ["shape"] = "smollm2-135m", ["lora"] = "r16 alpha32, 7 projections", ["batch"] = batch,
            ["prompt_tokens"] = promptLen, ["new_tokens"] = newTokens, ["iteration_s_median"] = Math.Round(Median(totals), 2), ["iteration_s_all"] = Arr(totals),
            ["generation"] = Phase("generation", 0), ["scoring"] = Phase("scoring", scoreFlops), ["update"] = Phase("update", updateFlops),
            ["generation_new_tokens_per_s"] = Math.Round(batch * newTokens / Median(phases["generation"]), 1),
            ["base_weights_mb"] = weights >> 20, ["adapter_params"] = adapter, ["adapter_state_mb"] = Math.Round(adapter * 16.0 / (1 << 20)),
            ["peak_rss_mb"] = peak, ["baseline_rss_mb"] = baseline, ["setup_peak_rss_mb"] = setupPeak,
            ["peak_over_base_weights"] = Math.Round(peak * (double)(1 << 20) / weights, 2),
            ["objective_kl_last"] = Math.Round(last["objective/kl"], 5), ["loss_value_last"] = Math.Round(last["loss/value_avg"], 5),
            ["load_1min"] = Load(),
        });
        return 0;
    }

    private static int Dpo(string variant, int pairs, int len, int reps, long baseline, int? layers = null)
    {
        var tok = new ByteTokenizer();
        var config = ModelPresets.Create("qwen2.5-0.5b", tok, len);
        // --layers N: the same widths and vocabulary with fewer decoder layers, to see what the memory scales with.
        if (layers is int nl) { var o = config.ToJson(); o["num_hidden_layers"] = nl; config = ModelConfig.FromJson(o); }
        bool chunked = variant != "full", lora = variant is "lora" or "bf16" or "ckpt";
        var options = new TrainingOptions { Bf16 = variant is "bf16" or "ckpt", GradientCheckpointing = variant == "ckpt" };
        var clock = Stopwatch.StartNew();
        // LoRA + bf16 stores the frozen base in bf16: build it in bf16 (as the CLI now loads it), so no fp32 copy of the
        // 0.5B weights (2 GB) ever exists on the way; full fine-tuning keeps fp32 masters.
        var policy = ModelFactory.Create(config, 0, lora && options.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32);
        Console.Error.WriteLine($"rs_dpo: model built in {clock.Elapsed.TotalSeconds:F0} s");
        ModelSetup.Prepare(policy, options, lora ? new LoraSettings { R = 16, Alpha = 32, Dropout = 0.05 } : null, 0);
        Console.Error.WriteLine($"rs_dpo: prepared at {clock.Elapsed.TotalSeconds:F0} s");
        var reference = lora ? Lora.AdapterOff(policy) : WeightCopy.FrozenCopy(policy);
        policy.train();
        var trainable = policy.parameters().Where(p => p.requires_grad).ToList();
        using var opt = optim.AdamW(trainable, lr: 1e-5);
        GC.Collect(); GC.WaitForPendingFinalizers();
        long prepPeak = Rss("VmHWM"), afterPrep = Rss("VmRSS");
        ResetPeak();                                         // from here on the peak is the training steps' own
        var ids = randint(0, 256, new long[] { 2 * pairs, len });
        var mask = ones(2 * pairs, len, ScalarType.Bool);
        mask[.., ..(len / 4)] = zeros(1, ScalarType.Bool);       // a quarter prompt, three quarters completion
        Tensor Logps(CausalLM m) => chunked ? CausalLmLoss.SequenceLogProbs(m, ids, null, mask) : CausalLmLoss.SequenceLogProbs(m.Forward(ids), ids, mask);
        double lastLoss = 0;
        var times = new List<double>();
        var phases = new[] { "reference_forward", "policy_forward", "backward", "optimizer" }.ToDictionary(k => k, _ => new List<double>());
        for (int r = 0; r < reps + 1; r++)
        {
            var sw = Stopwatch.StartNew();
            using (var scope = NewDisposeScope())
            {
                var part = Stopwatch.StartNew();
                Tensor refLp;
                using (var refScope = NewDisposeScope())
                using (no_grad()) refLp = Logps(reference).MoveToOuterDisposeScope();
                double tRef = part.Elapsed.TotalSeconds;
                Console.Error.WriteLine($"rs_dpo: step {r}: reference done, RSS {Rss("VmRSS")} MB, peak {Rss("VmHWM")} MB");
                part.Restart();
                var lp = Logps(policy);
                var margin = (lp[..pairs] - lp[pairs..]) - (refLp[..pairs] - refLp[pairs..]);
                var loss = -F.logsigmoid(margin * 0.1).mean();
                lastLoss = loss.item<float>();
                double tFwd = part.Elapsed.TotalSeconds;
                Console.Error.WriteLine($"rs_dpo: step {r}: policy forward done, RSS {Rss("VmRSS")} MB, peak {Rss("VmHWM")} MB");
                part.Restart();
                opt.zero_grad();
                loss.backward();
                double tBwd = part.Elapsed.TotalSeconds; part.Restart();
                opt.step();
                double tOpt = part.Elapsed.TotalSeconds;
                if (r > 0 || reps == 0) { phases["reference_forward"].Add(tRef); phases["policy_forward"].Add(tFwd); phases["backward"].Add(tBwd); phases["optimizer"].Add(tOpt); }
                Console.Error.WriteLine($"rs_dpo: step {r}: reference {tRef:F1} s, policy forward {tFwd:F1} s, backward {tBwd:F1} s, AdamW {tOpt:F2} s; RSS {Rss("VmRSS")} MB, peak {Rss("VmHWM")} MB");
            }
            Console.Error.WriteLine($"rs_dpo: step {r} {sw.Elapsed.TotalSeconds:F1} s");
            if (r > 0 || reps == 0) times.Add(sw.Elapsed.TotalSeconds);   // the first step also allocates AdamW's state (--reps 0: it is all there is)
        }
        long all = policy.parameters().Sum(p => p.numel());
        long adapter = trainable.Sum(p => p.numel());
        double baseBytes = policy.parameters().Where(p => !p.requires_grad).Sum(p => (double)p.numel() * p.element_size());
        if (!lora) baseBytes = all * 4.0;
        // One decoder layer's saved activations, bytes per token: its inputs and outputs of norms (fp32 inside RMSNorm),
        // q, k, v, attention output, o_proj input, gate, up, act·up (as autograd keeps them), in the activations' dtype.
        int h = config.HiddenSize, kv = config.NumKvHeads * config.HeadDim, inter = config.IntermediateSize;
        int act = options.Bf16 ? 2 : 4;
        double layerBytes = (double)2 * pairs * len * (act * (6.0 * h + 2 * kv + 4.0 * inter) + 4 * 4.0 * h);
        double adapterState = lora ? adapter * 16.0 : 0;        // fp32 weight + grad + two AdamW moments
        long peak = Rss("VmHWM");
        double goalDenominator = baseBytes + layerBytes + adapterState;
        Report(new JsonObject
        {
            ["workload"] = "rs_dpo", ["variant"] = variant, ["shape"] = "qwen2.5-0.5b", ["pairs"] = pairs, ["length"] = len,
            ["step_s_median"] = Math.Round(Median(times), 2), ["step_s_all"] = Arr(times),
            ["phases_s_median"] = new JsonObject(phases.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)Math.Round(Median(kv.Value), 2)))),
            ["flops_per_step_tflop"] = Math.Round(DpoFlops(policy, config, pairs, len, lora) / 1e12, 3), ["loss_last"] = Math.Round(lastLoss, 5),
            ["params"] = all, ["trainable_params"] = adapter, ["base_weights_mb"] = Math.Round(baseBytes / (1 << 20)),
            ["one_layer_activations_mb"] = Math.Round(layerBytes / (1 << 20)), ["adapter_state_mb"] = Math.Round(adapterState / (1 << 20)),
            ["peak_rss_mb"] = peak, ["baseline_rss_mb"] = baseline, ["setup_peak_rss_mb"] = prepPeak, ["rss_after_setup_mb"] = afterPrep,
            ["peak_over_goal_denominator"] = Math.Round(peak * (double)(1 << 20) / goalDenominator, 2),
            ["peak_minus_runtime_over_goal_denominator"] = Math.Round((peak - baseline) * (double)(1 << 20) / goalDenominator, 2),
            ["load_1min"] = Load(),
        });
        return 0;
    }

    // Model FLOPs of one DPO step (Program.cs accounting): reference forward 2·N', policy forward 2·N' and backward 4·N'
    // per token (LoRA: the frozen base needs no weight gradients, so backward ≈ 2·N' for the activation gradients), plus
    // attention 4·L·d·T forward; the LM head counted only at the three quarters of positions that are targets.
    private static double DpoFlops(CausalLM m, ModelConfig c, int pairs, int len, bool lora)
    {
        double tokens = 2.0 * pairs * len, head = (double)c.VocabSize * c.HiddenSize;
        double trunk = MatmulParams(m) - (c.TieWordEmbeddings ? head : 0) - (lora ? m.parameters().Where(p => p.requires_grad).Sum(p => p.numel()) : 0);
        double attn = 4.0 * c.NumLayers * c.HiddenSize * len;
        double perTokenFwd = 2 * trunk + attn + 0.75 * 2 * head;
        double backward = lora ? 2 * trunk + 2 * attn + 0.75 * 2 * head : 4 * trunk + 2 * attn + 0.75 * 4 * head;
        return tokens * (2 * perTokenFwd + backward);
    }

    private static JsonObject Strip(JsonObject c) { c.Remove("eos_token_id"); c.Remove("bos_token_id"); return c; }

    private static double Gemm(ScalarType dtype, int reps)
    {
        const int n = 1024;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var x = randn(n, n).to(dtype);
        var y = randn(n, n).to(dtype);
        matmul(x, y).Dispose();
        var t = new List<double>();
        for (int i = 0; i < reps; i++) { var sw = Stopwatch.StartNew(); matmul(x, y).Dispose(); t.Add(sw.Elapsed.TotalSeconds); }
        return 2.0 * n * n * n / Median(t) / 1e9;
    }

    private static int Child(string[] args, int reps, int threads)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") psi.ArgumentList.Add(typeof(RealScaleBench).Assembly.Location);
        foreach (var s in args.Concat(["--reps", reps.ToString(), "--threads", threads.ToString()])) psi.ArgumentList.Add(s);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.ExitCode;
    }

    private static double Median(List<double> xs) { var s = xs.OrderBy(x => x).ToList(); return s.Count == 0 ? double.NaN : s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2; }
    private static JsonArray Arr(List<double> xs) => new(xs.Select(x => (JsonNode)Math.Round(x, 3)).ToArray());
    private static void Report(JsonObject o) => Console.WriteLine(o.ToJsonString());
    private static void ResetPeak() { try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { } }
    private static double Load() { try { return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture); } catch (IOException) { return -1; } }
    private static long Rss(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal)) return long.Parse(line.Split(new[] { ' ', '\t' }, StringSplitOptions.RemoveEmptyEntries)[1]) / 1024;   // "VmHWM:\t10123456 kB": a tab, no space, from 10 GB on
        return -1;
    }
}
