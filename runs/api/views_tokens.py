"""Personal API tokens: ``/api/tokens/`` (list own, or a team's with ``?team=<slug>`` for a team
admin; POST makes one and answers its key, once) and ``/api/tokens/{id}/`` (GET, DELETE
revokes). Session only: a request authenticated by a token gets 403 here."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from runs.api.permissions import SessionOnly, team_for_admin
from runs.models import ApiToken, Team
from runs.selectors.teams import teams_for
from runs.selectors.tokens import tokens_manageable_by, tokens_of_team, tokens_of_user
from runs.services.tokens import MAX_EXPIRY_DAYS, NAME_MAX, token_create, token_revoke


class TokenOut(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    expired = serializers.BooleanField(source="is_expired", read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "team",
            "user",
            "prefix",
            "created_at",
            "expires_at",
            "expired",
            "last_used_at",
        ]
        read_only_fields = fields


class TokenCreatedOut(TokenOut):
    key = serializers.CharField(
        read_only=True, help_text="The secret key. Shown only in this answer; store it now."
    )

    class Meta(TokenOut.Meta):
        fields = [*TokenOut.Meta.fields, "key"]
        read_only_fields = fields


class TokenIn(serializers.Serializer):
    name = serializers.CharField(max_length=NAME_MAX)
    team = serializers.SlugField(
        required=False, help_text="Team slug; may be left out by a member of one team only."
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    expires_in_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_EXPIRY_DAYS
    )

    def validate(self, attrs):
        if attrs.get("expires_at") is not None and attrs.get("expires_in_days") is not None:
            raise ValidationError({"expires_at": ["give expires_at or expires_in_days, not both"]})
        return attrs


def _team_for_token(user, slug: str | None) -> Team:
    teams = list(teams_for(user).order_by("slug"))
    if slug:
        for team in teams:
            if team.slug == slug:
                return team
        raise ValidationError({"team": [f"you are not a member of team {slug!r}"]})
    if len(teams) == 1:
        return teams[0]
    if not teams:
        raise ValidationError({"team": ["you are not a member of any team"]})
    slugs = ", ".join(t.slug for t in teams)
    raise ValidationError({"team": [f"required: you are in several teams ({slugs})"]})


class TokenListCreate(ListAPIView):
    permission_classes = [IsAuthenticated, SessionOnly]
    serializer_class = TokenOut

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return ApiToken.objects.none()
        slug = self.request.GET.get("team")
        if slug:
            return tokens_of_team(team_for_admin(self.request, slug).pk)
        return tokens_of_user(self.request.user)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "team",
                OpenApiTypes.STR,
                description="A team's slug: every token of the team (team admins only).",
            )
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request=TokenIn, responses={201: TokenCreatedOut})
    def post(self, request):
        data = TokenIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        token, key = token_create(
            user=request.user,
            team=_team_for_token(request.user, v.get("team")),
            name=v["name"],
            expires_at=v.get("expires_at"),
            expires_in_days=v.get("expires_in_days"),
        )
        token.key = key  # for this one answer only
        return Response(TokenCreatedOut(token).data, status=status.HTTP_201_CREATED)


class TokenDetail(APIView):
    permission_classes = [IsAuthenticated, SessionOnly]

    def _token(self, request, token_id: int) -> ApiToken:
        token = tokens_manageable_by(request.user).filter(pk=token_id).first()
        if token is None:
            raise NotFound(f"token {token_id} not found")
        return token

    @extend_schema(responses=TokenOut)
    def get(self, request, token_id: int):
        return Response(TokenOut(self._token(request, token_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, token_id: int):
        token_revoke(token=self._token(request, token_id), by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
