using System.Diagnostics;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

/// <summary>
/// Issue #18: why the decode step's one-row (and few-row) matmuls stream their weights far below the copy bandwidth.
///
///   dotnet run -c Release --project bench/FineAlign.Bench -- --workload gemv [--threads 2] [--iters 200]
///
/// For each decode matmul of the stories15M shape (LM head 32000×288, fused q/k/v 864×288, fused gate/up 1536×288,
/// down 288×768, o 288×288) at 1 and 8 rows, several ways of computing the same y = x·Wᵀ are timed, each in the
/// same process as a 256 MB copy: GB/s of weight bytes read, and that rate ÷ the copy rate (read + write bytes/s,
/// the roofline's bandwidth). Weights are rotated over enough copies (≥ 128 MB in all) that each call reads its
/// matrix from memory, not from the L3 cache — as in decoding, where ~60 MB of other weights pass between two calls
/// of the same projection. Every variant's result is checked against the first (F.linear) before it is timed.
/// </summary>
internal static class GemvBench
{
    private sealed record Variant(string Name, Func<Tensor, Tensor, Tensor, Tensor> Run, bool RowsOneOnly = false);

    public static int Run(Dictionary<string, string> args)
    {
        int threads = int.Parse(args.GetValueOrDefault("threads", "2"));
        int iters = int.Parse(args.GetValueOrDefault("iters", "200"));
        string only = args.GetValueOrDefault("only", "");
        torch.set_num_threads(threads);
        torch.manual_seed(0);
        using var noGrad = torch.no_grad();
        double copy = CopyBandwidth();
        Report(new JsonObject { ["workload"] = "gemv", ["threads"] = threads, ["copy_gb_per_s"] = Math.Round(copy, 1), ["load_1min"] = Load() });

        var shapes = new (string Name, long Out, long In)[]
        {
            ("lm_head", 32000, 288), ("qkv", 864, 288), ("gate_up", 1536, 288), ("down", 288, 768), ("o", 288, 288),
        };
        // Each variant gets x [m, in], W [out, in] (row-major, as nn.Linear stores it), Wt = Wᵀ contiguous [in, out],
        // and returns y [m, out]. "out" buffers are per shape and row count, reused across calls.
        foreach (var (name, outF, inF) in shapes)
        {
            if (only.Length > 0 && !only.Split(',').Contains(name)) continue;
            long bytes = outF * inF * 4;
            int copies = (int)Math.Max(2, Math.Ceiling(128.0 * (1 << 20) / bytes));
            var ws = Enumerable.Range(0, copies).Select(_ => torch.randn(outF, inF) * 0.05).ToArray();
            var wts = ws.Select(w => w.t().contiguous()).ToArray();
            var wbf = ws.Select(w => w.to(ScalarType.BFloat16)).ToArray();
            var wtbf = wbf.Select(w => w.t().contiguous()).ToArray();
            // What a pre-transposed layout costs to make: W [out, in] copied into a reused Wᵀ buffer.
            var refresh = Time(Math.Max(10, iters / 10), copies, i => wts[i].copy_(ws[i].t()));
            ReportRow(name, 0, "refresh_transposed_copy", bytes, refresh, copy, 0);
            foreach (int block in new[] { 64, 256, 1024 })
            {
                var blocked = Time(Math.Max(10, iters / 10), copies, i => BlockedTranspose(ws[i], wts[i], block));
                ReportRow(name, 0, $"refresh_blocked_{block}", bytes, blocked, copy, (wts[0] - ws[0].t()).abs().max().item<float>());
            }
            foreach (int m in new[] { 1, 8 })
            {
                using var outBuf = torch.empty(m, outF);
                using var outVec = torch.empty(outF);
                var halves = new[] { torch.empty(m, outF / 2), torch.empty(m, outF - outF / 2) };
                var variants = new List<Variant>
                {
                    new("linear_3d", (x, w, wt) => F.linear(x.unsqueeze(1), w).squeeze(1)),   // what decoding calls: [B, 1, in]
                    new("linear_2d", (x, w, wt) => F.linear(x, w)),
                    new("mm_w_t_view", (x, w, wt) => x.mm(w.t())),
                    new("mm_pretransposed", (x, w, wt) => x.mm(wt)),
                    new("addmm_out", (x, w, wt) => outBuf.addmm_(x, w.t(), beta: 0, alpha: 1)),
                    new("addmm_out_pretransposed", (x, w, wt) => outBuf.addmm_(x, wt, beta: 0, alpha: 1)),
                    new("mv", (x, w, wt) => torch.mv(w, x.squeeze(0)).unsqueeze(0), RowsOneOnly: true),
                    new("addmv_out", (x, w, wt) => outVec.addmv_(w, x.squeeze(0), beta: 0, alpha: 1).unsqueeze(0), RowsOneOnly: true),
                    new("split2_threads", (x, w, wt) => SplitOnThreads(x, w, halves)),
                };
                // The weight in blocks of output rows, one GEMM each (each block's panel stays in cache while it is used,
                // instead of MKL packing the whole matrix per call): nn.Linear's layout and the Wᵀ layout.
                foreach (int blk in new[] { 512, 2048, 8192 })
                {
                    if (blk >= outF) continue;
                    variants.Add(new($"linear_row_blocks_{blk}", (x, w, wt) => Blocks(outF, blk, (r, n) => F.linear(x, w.narrow(0, r, n)))));
                    variants.Add(new($"mm_pretransposed_col_blocks_{blk}", (x, w, wt) => Blocks(outF, blk, (r, n) => x.mm(wt.narrow(1, r, n)))));
                }
                var xs = torch.randn(m, inF);
                var reference = F.linear(xs, ws[0]);
                foreach (var v in variants)
                {
                    if (v.RowsOneOnly && m != 1) continue;
                    var check = v.Run(xs, ws[0], wts[0]);
                    double err = (check - reference).abs().max().item<float>();
                    var times = Time(iters, copies, i => v.Run(xs, ws[i], wts[i]));
                    ReportRow(name, m, v.Name, bytes, times, copy, err);
                }
                // bf16 weights (the --dtype bfloat16 path): half the bytes; rate counted on the bytes actually read.
                var xb = xs.to(ScalarType.BFloat16);
                var tb = Time(iters, copies, i => F.linear(xb, wbf[i]));
                ReportRow(name, m, "linear_2d_bf16", bytes / 2, tb, copy, (F.linear(xb, wbf[0]).to(ScalarType.Float32) - reference).abs().max().item<float>());
                var tbt = Time(iters, copies, i => xb.mm(wtbf[i]));
                ReportRow(name, m, "mm_pretransposed_bf16", bytes / 2, tbt, copy, (xb.mm(wtbf[0]).to(ScalarType.Float32) - reference).abs().max().item<float>());
                foreach (var h in halves) h.Dispose();
            }
            foreach (var t in ws.Concat(wts).Concat(wbf).Concat(wtbf)) t.Dispose();
        }
        return 0;
    }

    // The vocabulary rows in two halves, each on its own .NET thread with libtorch's intra-op pool at one thread
    // (set_num_threads is process-wide, so it is restored afterwards): the split a two-core gemv would make.
    private static Tensor SplitOnThreads(Tensor x, Tensor w, Tensor[] halves)
    {
        long half = w.shape[0] / 2;
        int before = torch.get_num_threads();
        torch.set_num_threads(1);
        try
        {
            var a = w.narrow(0, 0, half);
            var b = w.narrow(0, half, w.shape[0] - half);
            var t = Task.Run(() => { using var _ = torch.no_grad(); halves[1].addmm_(x, b.t(), beta: 0, alpha: 1); });
            halves[0].addmm_(x, a.t(), beta: 0, alpha: 1);
            t.Wait();
            return torch.cat(halves, 1);
        }
        finally { torch.set_num_threads(before); }
    }

    private static Tensor Blocks(long outF, int block, Func<long, long, Tensor> part)
    {
        var parts = new List<Tensor>();
        for (long r = 0; r < outF; r += block) parts.Add(part(r, Math.Min(block, outF - r)));
        return torch.cat(parts, 1);
    }

    internal static Tensor BlockedTranspose(Tensor w, Tensor wt, int block)
    {
        long rows = w.shape[0];
        for (long r = 0; r < rows; r += block)
        {
            long n = Math.Min(block, rows - r);
            using var dst = wt.narrow(1, r, n);
            using var src = w.narrow(0, r, n);
            using var srcT = src.t();
            dst.copy_(srcT);
        }
        return wt;
    }

    private static List<double> Time(int iters, int copies, Func<int, Tensor> call)
    {
        for (int i = 0; i < copies; i++) { using var scope = torch.NewDisposeScope(); call(i); }   // warm-up
        var times = new List<double>(iters);
        for (int i = 0; i < iters; i++)
        {
            using var scope = torch.NewDisposeScope();
            var sw = Stopwatch.StartNew();
            call(i % copies);
            times.Add(sw.Elapsed.TotalSeconds);
        }
        return times;
    }

    private static void ReportRow(string shape, int rows, string variant, long bytes, List<double> times, double copy, double err)
    {
        var s = times.OrderBy(t => t).ToList();
        double med = s[s.Count / 2];
        double gbps = bytes / med / 1e9;
        Report(new JsonObject
        {
            ["shape"] = shape, ["rows"] = rows, ["variant"] = variant, ["us_median"] = Math.Round(med * 1e6, 1),
            ["us_p10"] = Math.Round(s[s.Count / 10] * 1e6, 1), ["weight_gb_per_s"] = Math.Round(gbps, 2),
            ["ratio_to_copy"] = Math.Round(gbps / copy, 3), ["max_abs_err_vs_linear"] = err, ["load_1min"] = Load(),
        });
    }

    internal static double CopyBandwidth()
    {
        const long n = 64L << 20;   // 256 MB fp32, read + write counted
        using var src = torch.rand(n);
        using var dst = torch.empty(n);
        dst.copy_(src);
        var rates = new List<double>();
        for (int r = 0; r < 9; r++)
        {
            var sw = Stopwatch.StartNew();
            dst.copy_(src);
            rates.Add(2.0 * n * 4 / sw.Elapsed.TotalSeconds / 1e9);
        }
        rates.Sort();
        return rates[rates.Count / 2];
    }

    private static double Load()
    {
        try { return double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture); }
        catch (IOException) { return -1; }
    }

    private static void Report(JsonObject o) => Console.WriteLine(o.ToJsonString());
}
