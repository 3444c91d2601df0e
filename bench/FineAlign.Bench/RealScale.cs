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
///   (PPO with LoRA at the smollm2-135m shape: not yet ported to the online-RL engine; see bench/RESULTS.md.)
///   rs_all     all of the above, one child process each.
/// FLOPs as in Program.cs: fwd+bwd = 6·N' + 12·L·d·T per token (N' = parameters in matmuls: all but the input embedding).
/// </summary>
internal static class RealScaleBench
{
    public static int Run(string workload, Dictionary<string, string> a, int reps, int threads)
    {
        torch.set_num_threads(threads);
        torch.manual_seed(0);
        if (workload == "rs_all")
        {
            int rc = Child(["--workload", "rs_bf16"], reps, threads);
            foreach (var v in new[] { "full", "chunked", "lora", "bf16", "ckpt" })
                rc |= Child(["--workload", "rs_dpo", "--variant", v, "--pairs", a.GetValueOrDefault("pairs", "1"), "--length", a.GetValueOrDefault("length", "256")], reps, threads);
            rc |= Child(["--workload", "rs_dpo", "--variant", "ckpt", "--pairs", "4", "--length", "512"], reps, threads);
            return rc;
        }
        var (fp32Gemm, bf16Gemm) = (Gemm(ScalarType.Float32, 5), Gemm(ScalarType.BFloat16, 5));
        Report(new JsonObject
        {
            ["workload"] = "machine", ["gemm_fp32_gflops_median"] = Math.Round(fp32Gemm, 1), ["gemm_bf16_gflops_median"] = Math.Round(bf16Gemm, 1),
            ["bf16_over_fp32_gemm"] = Math.Round(bf16Gemm / fp32Gemm, 2), ["cpu_native_bf16"] = ModelSetup.CpuHasBf16(), ["load_1min"] = Load(),
        });
        ResetPeak();
        long baseline = Rss("VmRSS");
        return workload switch
        {
            "rs_bf16" => Bf16FwdBwd(reps, fp32Gemm, bf16Gemm, baseline),
            "rs_dpo" => Dpo(a.GetValueOrDefault("variant", "ckpt"), int.Parse(a.GetValueOrDefault("pairs", "1")), int.Parse(a.GetValueOrDefault("length", "256")), reps, baseline),
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
        double Step(CausalLM m)
        {
            var sw = Stopwatch.StartNew();
            using var scope = NewDisposeScope();
            CausalLmLoss.Loss(m, ids, null, mask).backward();
            m.zero_grad();
            return sw.Elapsed.TotalSeconds;
        }
        Step(fp32); Step(bf16);   // warm-up
        var t32 = new List<double>(); var t16 = new List<double>();
        double loss32 = 0, loss16 = 0;
        for (int r = 0; r < reps; r++) { t32.Add(Step(fp32)); t16.Add(Step(bf16)); }
        using (no_grad()) { loss32 = CausalLmLoss.Loss(fp32, ids, null, mask).item<float>(); loss16 = CausalLmLoss.Loss(bf16, ids, null, mask).item<float>(); }
        double m32 = Median(t32), m16 = Median(t16), tokens = batch * len;
        Report(new JsonObject
        {
            ["workload"] = "rs_bf16", ["shape"] = "stories15M", ["batch"] = $"{batch}x{len}",
            ["fp32_s_median"] = Math.Round(m32, 3), ["bf16_s_median"] = Math.Round(m16, 3),
            ["fp32_s_all"] = Arr(t32), ["bf16_s_all"] = Arr(t16),
            ["fp32_tokens_per_s"] = Math.Round(tokens / m32, 1), ["bf16_tokens_per_s"] = Math.Round(tokens / m16, 1),
            ["bf16_speedup"] = Math.Round(m32 / m16, 2),
            ["fp32_mfu_vs_fp32_gemm"] = Math.Round(tokens * flopsPerToken / m32 / 1e9 / fp32Gemm, 3),
            ["bf16_mfu_vs_bf16_gemm"] = Math.Round(tokens * flopsPerToken / m16 / 1e9 / bf16Gemm, 3),
            ["loss_fp32"] = Math.Round(loss32, 5), ["loss_bf16"] = Math.Round(loss16, 5),
            ["peak_rss_mb"] = Rss("VmHWM"), ["baseline_rss_mb"] = baseline, ["load_1min"] = Load(),
        });
        return 0;
    }

    private static int Dpo(string variant, int pairs, int len, int reps, long baseline)
    {
        var tok = new ByteTokenizer();
        var config = ModelPresets.Create("qwen2.5-0.5b", tok, len);
        bool chunked = variant != "full", lora = variant is "lora" or "bf16" or "ckpt";
        var options = new TrainingOptions { Bf16 = variant is "bf16" or "ckpt", GradientCheckpointing = variant == "ckpt" };
        var clock = Stopwatch.StartNew();
        var policy = ModelFactory.Create(config, 0);
        Console.Error.WriteLine($"rs_dpo: model built in {clock.Elapsed.TotalSeconds:F0} s");
        ModelSetup.Prepare(policy, options, lora ? new LoraSettings { R = 16, Alpha = 32, Dropout = 0.05 } : null, 0);
        Console.Error.WriteLine($"rs_dpo: prepared at {clock.Elapsed.TotalSeconds:F0} s");
        var reference = lora ? Lora.AdapterOff(policy) : WeightCopy.FrozenCopy(policy);
        policy.train();
        var trainable = policy.parameters().Where(p => p.requires_grad).ToList();
        using var opt = optim.AdamW(trainable, lr: 1e-5);
        var ids = randint(0, 256, new long[] { 2 * pairs, len });
        var mask = ones(2 * pairs, len, ScalarType.Bool);
        mask[.., ..(len / 4)] = zeros(1, ScalarType.Bool);       // a quarter prompt, three quarters completion
        Tensor Logps(CausalLM m) => chunked ? CausalLmLoss.SequenceLogProbs(m, ids, null, mask) : CausalLmLoss.SequenceLogProbs(m.Forward(ids), ids, mask);
        double lastLoss = 0;
        var times = new List<double>();
        for (int r = 0; r < reps + 1; r++)
        {
            var sw = Stopwatch.StartNew();
            using (var scope = NewDisposeScope())
            {
                Tensor refLp;
                using (var refScope = NewDisposeScope())
                using (no_grad()) refLp = Logps(reference).MoveToOuterDisposeScope();
                var lp = Logps(policy);
                var margin = (lp[..pairs] - lp[pairs..]) - (refLp[..pairs] - refLp[pairs..]);
                var loss = -F.logsigmoid(margin * 0.1).mean();
                opt.zero_grad();
                loss.backward();
                opt.step();
                lastLoss = loss.item<float>();
            }
            Console.Error.WriteLine($"rs_dpo: step {r} {sw.Elapsed.TotalSeconds:F1} s");
            if (r > 0) times.Add(sw.Elapsed.TotalSeconds);   // the first step also allocates AdamW's state
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
            ["step_s_median"] = Math.Round(Median(times), 2), ["step_s_all"] = Arr(times), ["loss_last"] = Math.Round(lastLoss, 5),
            ["params"] = all, ["trainable_params"] = adapter, ["base_weights_mb"] = Math.Round(baseBytes / (1 << 20)),
            ["one_layer_activations_mb"] = Math.Round(layerBytes / (1 << 20)), ["adapter_state_mb"] = Math.Round(adapterState / (1 << 20)),
            ["peak_rss_mb"] = peak, ["baseline_rss_mb"] = baseline,
            ["peak_over_goal_denominator"] = Math.Round(peak * (double)(1 << 20) / goalDenominator, 2),
            ["peak_minus_runtime_over_goal_denominator"] = Math.Round((peak - baseline) * (double)(1 << 20) / goalDenominator, 2),
            ["load_1min"] = Load(),
        });
        return 0;
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
            if (line.StartsWith(field + ":", StringComparison.Ordinal)) return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024;
        return -1;
    }
}
