using System.Globalization;
using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace FineAlign.Rewards;

/// <summary>How <see cref="AnswerReward"/> compares a response with its row's reference answer.</summary>
public enum AnswerMatch
{
    /// <summary><c>exact-match:COLUMN</c>: the response equals the column's text (both trimmed, whitespace runs as one space; case-sensitive).</summary>
    Exact,
    /// <summary>
    /// <c>numeric:COLUMN</c>: the response's answer number equals the column's (|a − b| ≤ 1e-6 · max(1, |b|)). The answer is
    /// the number after the last <c>####</c> (GSM8K's convention) or else the last number in the text; "1,234" reads as 1234.
    /// </summary>
    Numeric,
}

/// <summary>
/// A verifiable reward from a dataset column (as TRL's reward functions receive a dataset's <c>solution</c> column):
/// 1 when the response matches its prompt row's reference answer, 0 otherwise, on the last token. The column comes
/// with every prompt row of <c>--prompts</c> (<see cref="Data.PromptRow.Columns"/>); a row without it is refused before
/// training naming file, line and field, and a <c>numeric</c> reference that holds no number likewise.
/// </summary>
public sealed class AnswerReward : RewardSource
{
    private readonly string _column;
    private readonly AnswerMatch _match;

    public AnswerReward(string name, string column, AnswerMatch match) : base(name)
    {
        if (string.IsNullOrWhiteSpace(column)) throw new FineAlignException($"reward '{name}' needs a column name, e.g. {Spec(match)}:solution");
        _column = column; _match = match;
    }

    public static string Spec(AnswerMatch m) => m == AnswerMatch.Exact ? "exact-match" : "numeric";

    public override IReadOnlyList<string> Columns => [_column];

    public override string? ColumnProblem(string column, string value) =>
        _match == AnswerMatch.Numeric && column == _column && Number(value) is null ? $"holds no number ('{Snippet(value)}'); {Spec(_match)}:{_column} compares numbers" : null;

    /// <summary>1 or 0 for one response against its reference.</summary>
    public bool Matches(string response, string reference) => _match switch
    {
        AnswerMatch.Exact => Normalize(response) == Normalize(reference),
        _ => Number(response) is double a && Number(reference) is double b && Math.Abs(a - b) <= 1e-6 * Math.Max(1, Math.Abs(b)),
    };

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        int b = (int)batch.BatchSize;
        var scores = new float[b];
        for (int i = 0; i < b; i++)
        {
            string reference = ColumnValue(batch, i, _column);
            if (ColumnProblem(_column, reference) is string problem)
                throw new FineAlignException($"reward source '{Name}': column '{_column}' of batch index {i} {problem}");
            string response = batch.ResponseTexts?[i] ?? throw new FineAlignException($"reward source '{Name}' needs response texts");
            scores[i] = Matches(response, reference) ? 1f : 0f;
        }
        return SequenceRewardSource.PlaceOnLastToken(tensor(scores), batch.ResponseMask);
    }

    private static string Normalize(string s) => Regex.Replace(s.Trim(), @"\s+", " ");

    private static readonly Regex NumberPattern = new(@"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+", RegexOptions.CultureInvariant);

    /// <summary>The number after the last "####", else the last number of <paramref name="text"/>; null when there is none.</summary>
    public static double? Number(string text)
    {
        int mark = text.LastIndexOf("####", StringComparison.Ordinal);
        var matches = NumberPattern.Matches(mark >= 0 ? text[(mark + 4)..] : text);
        if (matches.Count == 0) return null;
        var m = mark >= 0 ? matches[0] : matches[^1];
        return double.TryParse(m.Value.Replace(",", ""), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : null;
    }

    private static string Snippet(string s) => s.Length > 40 ? s[..40] + "…" : s;
}
