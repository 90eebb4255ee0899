"""Settings pages: personal API tokens (/settings/tokens/). A new token's key is shown in the
answer to the POST that made it, and nowhere else: it is not kept (not even in the session),
so reloading the list never shows it again."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from runs.models import Team
from runs.selectors.teams import admin_team_ids_for, teams_for
from runs.selectors.tokens import tokens_manageable_by, tokens_of_team, tokens_of_user
from runs.services.tokens import MAX_EXPIRY_DAYS, NAME_MAX, token_create, token_revoke


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=NAME_MAX,
        widget=forms.TextInput(attrs={"placeholder": "what or where it is used"}),
    )
    team = forms.ModelChoiceField(queryset=Team.objects.none(), to_field_name="slug")
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        widget=forms.NumberInput(attrs={"placeholder": "never"}),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        teams = teams_for(user).order_by("name")
        self.fields["team"].queryset = teams
        if len(teams) == 1:
            self.fields["team"].initial = teams[0].slug


def _page(request, form: TokenForm, created=None, key: str | None = None, status: int = 200):
    admin_teams = Team.objects.filter(pk__in=admin_team_ids_for(request.user)).order_by("name")
    team_tokens = [
        (team, list(tokens_of_team(team.pk).exclude(user=request.user))) for team in admin_teams
    ]
    context = {
        "form": form,
        "tokens": list(tokens_of_user(request.user)),
        "team_tokens": team_tokens,
        "created": created,
        "key": key,
    }
    return render(request, "frontend/settings_tokens.html", context, status=status)


@login_required
def tokens_page(request):
    if request.method != "POST":
        return _page(request, TokenForm(user=request.user))
    form = TokenForm(request.POST, user=request.user)
    if not form.is_valid():
        return _page(request, form, status=400)
    try:
        token, key = token_create(
            user=request.user,
            team=form.cleaned_data["team"],
            name=form.cleaned_data["name"],
            expires_in_days=form.cleaned_data["expires_in_days"],
        )
    except ValidationError as exc:
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
        return _page(request, form, status=400)
    response = _page(request, TokenForm(user=request.user), created=token, key=key, status=201)
    response["Cache-Control"] = "no-store"  # the key must not stay in a browser or proxy cache
    return response


@login_required
@require_POST
def token_revoke_view(request, token_id: int):
    token = tokens_manageable_by(request.user).filter(pk=token_id).first()
    if token is None:
        raise Http404("token not found")
    token_revoke(token=token, by=request.user)
    messages.success(request, f"Token {token.prefix}… ({token.name}) revoked.")
    return redirect("settings-tokens")
