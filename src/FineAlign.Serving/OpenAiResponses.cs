using System.Text;
using System.Text.Json.Nodes;
using FineAlign.Generation;
using FineAlign.Text;

namespace FineAlign.Serving;

/// <summary>Pieces of OpenAI's response bodies: token strings, log-prob objects, finish reasons, usage.</summary>
internal static class OpenAiResponses
{
    /// <summary>vLLM's stand-in for a log-prob of -inf (JSON has no infinity).</summary>
    public const float MinLogprob = -9999f;

    public static JsonNode Lp(float x) => JsonValue.Create(float.IsFinite(x) ? x : MinLogprob);

    /// <summary>A token as text, or vLLM's "token_id:N" when asked (return_tokens_as_token_ids) or when there is no tokenizer.</summary>
    public static string TokenString(int id, bool asIds, TextTokenizer? tokenizer) =>
        asIds || tokenizer is null ? $"token_id:{id}" : tokenizer.Decode([id], skipSpecialTokens: false);

    public static string FinishReason(FinishReason r) => r == Generation.FinishReason.Length ? "length" : "stop";

    /// <summary>vLLM's stop_reason: the stop string that ended the text, null for EOS or length.</summary>
    public static string? StopReason(GeneratedSequence g, string[] stops, TextTokenizer? tokenizer)
    {
        if (g.FinishReason != Generation.FinishReason.StopString || tokenizer is null) return null;
        string full = tokenizer.Decode(g.Tokens);
        return stops.Where(s => full.IndexOf(s, StringComparison.Ordinal) == g.Text.Length).FirstOrDefault();
    }

    public static JsonObject Usage(long prompt, long completion) => new()
    {
        ["prompt_tokens"] = prompt, ["completion_tokens"] = completion, ["total_tokens"] = prompt + completion,
    };

    /// <summary>One scored token: id, its log-prob (null for the first prompt token, which nothing predicts) and alternatives.</summary>
    public readonly record struct Entry(int Id, float? LogProb, TopToken[]? Top);

    /// <summary>The entries of one choice: prompt tokens first when echoed, then the completion.</summary>
    public static List<Entry> Entries(int[] prompt, int[] completion, TokenScores s, bool echo)
    {
        int[] full = [.. prompt, .. completion];
        var list = new List<Entry>(full.Length);
        if (echo && full.Length > 0 && s.From >= 1) list.Add(new Entry(full[0], null, null));
        for (int j = 0; j < s.LogProbs.Length; j++) list.Add(new Entry(full[s.From + j], s.LogProbs[j], s.Top[j]));
        return list;
    }

    /// <summary>Completions' <c>logprobs</c>: tokens, token_logprobs, top_logprobs (token → log-prob) and text_offset into the choice's text.</summary>
    public static JsonObject CompletionLogprobs(IEnumerable<Entry> entries, bool asIds, TextTokenizer? tokenizer, int offset)
    {
        var tokens = new JsonArray();
        var lps = new JsonArray();
        var tops = new JsonArray();
        var offsets = new JsonArray();
        foreach (var e in entries)
        {
            string s = TokenString(e.Id, asIds, tokenizer);
            tokens.Add(s);
            lps.Add(e.LogProb is float f ? Lp(f) : null);
            if (e.Top is null) tops.Add(null);
            else
            {
                var d = new JsonObject();
                foreach (var t in e.Top)
                {
                    string key = TokenString(t.Id, asIds, tokenizer);
                    if (!d.ContainsKey(key)) d[key] = Lp(t.LogProb);
                }
                tops.Add(d);
            }
            offsets.Add(offset);
            offset += asIds ? 0 : s.Length;
        }
        return new JsonObject { ["tokens"] = tokens, ["token_logprobs"] = lps, ["top_logprobs"] = tops, ["text_offset"] = offsets };
    }

    /// <summary>Chat's <c>logprobs</c>: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.</summary>
    public static JsonObject ChatLogprobs(IEnumerable<Entry> entries, bool asIds, TextTokenizer? tokenizer)
    {
        var content = new JsonArray();
        foreach (var e in entries)
        {
            var top = new JsonArray();
            foreach (var t in e.Top ?? []) top.Add(ChatToken(t.Id, t.LogProb, asIds, tokenizer));
            var item = ChatToken(e.Id, e.LogProb ?? MinLogprob, asIds, tokenizer);
            item["top_logprobs"] = top;
            content.Add(item);
        }
        return new JsonObject { ["content"] = content };
    }

    private static JsonObject ChatToken(int id, float lp, bool asIds, TextTokenizer? tokenizer)
    {
        string s = TokenString(id, asIds, tokenizer);
        return new JsonObject
        {
            ["token"] = s, ["logprob"] = Lp(lp),
            ["bytes"] = new JsonArray(Encoding.UTF8.GetBytes(s).Select(b => (JsonNode)(int)b).ToArray()),
        };
    }
}

/// <summary>
/// Turns tokens arriving one by one into text deltas whose concatenation is the final text: a delta is sent only
/// while it extends what was sent (an incomplete UTF-8 character, decoded as U+FFFD, waits for its next byte), and
/// the last <c>holdBack</c> characters wait until no stop string can begin in them.
/// </summary>
internal sealed class TextStreamer(TextTokenizer? tokenizer, int holdBack)
{
    private readonly List<int> _tokens = [];
    private string _sent = "";

    public string Push(int token)
    {
        if (tokenizer is null) return "";
        _tokens.Add(token);
        string text = tokenizer.Decode(_tokens).TrimEnd('\uFFFD');
        if (holdBack > 0) text = text[..Math.Max(0, text.Length - holdBack)];
        return Advance(text);
    }

    /// <summary>The rest of <paramref name="finalText"/> not sent yet.</summary>
    public string Finish(string finalText) => Advance(finalText);

    private string Advance(string text)
    {
        if (text.Length <= _sent.Length || !text.StartsWith(_sent, StringComparison.Ordinal)) return "";
        string delta = text[_sent.Length..];
        _sent = text;
        return delta;
    }
}
