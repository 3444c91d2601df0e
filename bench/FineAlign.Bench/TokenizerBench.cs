using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using FineAlign.Text;
using Microsoft.ML.Tokenizers;

/// <summary>
/// <c>--workload tokenize</c>: tokens/s encoding ../shared/data/tinystories with the real Qwen3 and Llama 3
/// tokenizer.json files through FineAlign's pipeline, next to Microsoft.ML.Tokenizers' TiktokenTokenizer built
/// from the same vocabulary (token bytes ranked by id) and the same split regex, in the same process. One
/// thread; each story line is encoded separately, as a dataset would be. "cold" is the first pass in the process
/// (JIT, regex compilation and an empty per-word cache), "empty_cache" the first pass of a second, fresh instance
/// (empty cache only), "warm" the median of repeated passes (cache filled).
/// </summary>
static class TokenizerBench
{
    public static int Run(int reps)
    {
        string shared = FindShared();
        string textPath = Path.Combine(shared, "data", "tinystories", "tinystories_val_subset.txt");
        var lines = File.ReadLines(textPath).Where(l => l.Length > 0).ToList();
        long chars = lines.Sum(l => (long)l.Length);
        foreach (string name in new[] { "qwen3", "llama3" })
        {
            string dir = Path.Combine(shared, "tokenizers", name);
            var sw = Stopwatch.StartNew();
            var ours = TokenizerLoader.Load(dir);
            double loadS = sw.Elapsed.TotalSeconds;
            var (tokens, cold) = Pass(lines, t => ours.Encode(t).Length);
            var warm = Median(Enumerable.Range(0, reps).Select(_ => Pass(lines, t => ours.Encode(t).Length).Seconds));

            sw.Restart();
            var tiktoken = BuildTiktoken(Path.Combine(dir, "tokenizer.json"));
            double tkLoadS = sw.Elapsed.TotalSeconds;
            var (tkTokens, tkCold) = Pass(lines, t => tiktoken.EncodeToIds(t).Count);
            var tkWarm = Median(Enumerable.Range(0, reps).Select(_ => Pass(lines, t => tiktoken.EncodeToIds(t).Count).Seconds));
            int agree = lines.Count(l => ours.Encode(l).SequenceEqual(tiktoken.EncodeToIds(l)));
            // A fresh instance in the now-warm process: empty per-word cache, but JIT and regex compilation done.
            var fresh = TokenizerLoader.Load(dir);
            double freshS = Pass(lines, t => fresh.Encode(t).Length).Seconds;
            var freshTk = BuildTiktoken(Path.Combine(dir, "tokenizer.json"));
            double freshTkS = Pass(lines, t => freshTk.EncodeToIds(t).Count).Seconds;

            Console.WriteLine(new JsonObject
            {
                ["workload"] = "tokenize", ["tokenizer"] = name, ["lines"] = lines.Count, ["chars"] = chars, ["tokens"] = tokens,
                ["finealign_load_s"] = Math.Round(loadS, 2),
                ["finealign_cold_tokens_per_s"] = Math.Round(tokens / cold),
                ["finealign_warm_tokens_per_s"] = Math.Round(tokens / warm),
                ["tiktoken_load_s"] = Math.Round(tkLoadS, 2),
                ["tiktoken_cold_tokens_per_s"] = Math.Round(tkTokens / tkCold),
                ["tiktoken_warm_tokens_per_s"] = Math.Round(tkTokens / tkWarm),
                ["warm_ratio_finealign_over_tiktoken"] = Math.Round(tkWarm / warm, 2),
                ["cold_ratio_finealign_over_tiktoken"] = Math.Round(tkCold / cold, 2),
                ["finealign_empty_cache_tokens_per_s"] = Math.Round(tokens / freshS),
                ["tiktoken_empty_cache_tokens_per_s"] = Math.Round(tkTokens / freshTkS),
                ["empty_cache_ratio_finealign_over_tiktoken"] = Math.Round(freshTkS / freshS, 2),
                ["lines_with_identical_ids"] = $"{agree}/{lines.Count}",
                ["peak_rss_mb"] = PeakRssMb(), ["reps"] = reps, ["load_1min"] = File.ReadAllText("/proc/loadavg").Split(' ')[0],
            }.ToJsonString());
        }
        return 0;
    }

    private static (long Tokens, double Seconds) Pass(List<string> lines, Func<string, int> encode)
    {
        var sw = Stopwatch.StartNew();
        long n = 0;
        foreach (string l in lines) n += encode(l);
        return (n, sw.Elapsed.TotalSeconds);
    }

    private static double Median(IEnumerable<double> xs)
    {
        var s = xs.Order().ToArray();
        return s.Length == 0 ? double.NaN : s[s.Length / 2];
    }

    // tiktoken's file format: "<base64 of the token's bytes> <rank>" per line; rank = id (both vocabularies
    // list merged tokens in merge order). The pre-tokenizer is tokenizer.json's Split regex.
    private static TiktokenTokenizer BuildTiktoken(string tokenizerJson)
    {
        var root = JsonNode.Parse(File.ReadAllText(tokenizerJson))!;
        var sb = new StringBuilder();
        foreach (var (piece, id) in root["model"]!["vocab"]!.AsObject())
        {
            var bytes = piece.Select(c => ByteLevel.ByteOf(c) ?? throw new InvalidOperationException($"not byte-level: {piece}")).ToArray();
            sb.Append(Convert.ToBase64String(bytes)).Append(' ').Append((int)id!).Append('\n');
        }
        var specials = root["added_tokens"]!.AsArray().ToDictionary(t => (string)t!["content"]!, t => (int)t!["id"]!);
        string pattern = (string)root["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"]!["Regex"]!;
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(sb.ToString()));
        return TiktokenTokenizer.Create(stream, new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), specials), null, specials);
    }

    private static long PeakRssMb()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:")) return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024;
        return -1;
    }

    private static string FindShared()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FineAlign.slnx"))) dir = dir.Parent;
        string shared = Path.GetFullPath(Path.Combine(dir?.FullName ?? ".", "..", "shared"));
        return Directory.Exists(shared) ? shared : throw new DirectoryNotFoundException($"the tokenizer benchmark needs ../shared beside the repository (looked for {shared})");
    }
}
